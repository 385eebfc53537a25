//! The conformance suite (conformance/cases, docs/as4.md §7) against the self peer: two sets
//! of Ventanilla access points over HTTPS on loopback. Every implemented case must pass.

use ventanilla_conformance::case::{Status, load_dir};
use ventanilla_conformance::runner::{RunOptions, Verdict, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_implemented_case_passes_against_the_self_peer() {
    let repo = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let work = tempfile::tempdir().unwrap();
    let options = RunOptions {
        repo: repo.clone(),
        work: work.path().to_owned(),
        peer: "self".into(),
        case: None,
        all: false,
        config: None,
        partner: None,
    };
    let (rows, summary) = run(&options).await.unwrap();
    let failures: Vec<String> = rows
        .iter()
        .filter_map(|r| match &r.verdict {
            Verdict::Failed(why) => Some(format!("case {}: {why}", r.id)),
            _ => None,
        })
        .collect();
    assert!(failures.is_empty(), "{failures:#?}");
    // Every implemented case that the self peer plays (some need phase4) passed.
    let for_self = load_dir(&repo.join("conformance/cases"))
        .unwrap()
        .iter()
        .filter(|c| c.status == Status::Implemented)
        .filter(|c| c.run.as_ref().is_some_and(|r| r.peers.iter().any(|p| p == "self")))
        .count();
    assert!(for_self >= 70, "{for_self}");
    assert_eq!(summary.passed, for_self);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_case_can_be_run_alone_and_an_unknown_one_is_an_error() {
    let repo = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let work = tempfile::tempdir().unwrap();
    let mut options = RunOptions {
        repo,
        work: work.path().to_owned(),
        peer: "self".into(),
        case: Some("7".into()),
        all: false,
        config: None,
        partner: None,
    };
    let (rows, summary) = run(&options).await.unwrap();
    assert_eq!((rows.len(), summary.passed), (1, 1));
    options.case = Some("26".into());
    let (rows, summary) = run(&options).await.unwrap();
    assert!(matches!(rows[0].verdict, Verdict::Skipped(_)));
    assert_eq!(summary.to_string(), "conformance: 0 passed, 0 failed, 1 skipped");
    options.case = Some("999".into());
    assert!(run(&options).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_no_control_cases_run_against_a_partner_url() {
    let repo = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let work = tempfile::tempdir().unwrap();
    let options = ventanilla::demo::Options { max_message: "8MiB".into(), ..Default::default() };
    let nodes = ventanilla::demo::launch_with(
        &work.path().join("aps"),
        &repo.join("pmodes"),
        &[("cl", "CL-SICEX"), ("pe", "PE-VUCE")],
        &options,
    )
    .await
    .unwrap();
    let config = work.path().join("cl.toml");
    std::fs::write(&config, ventanilla::demo::toml_config(&nodes[0].node.ap.config)).unwrap();
    let url = format!("https://127.0.0.1:{}/as4", nodes[1].node.as4_addr.port());
    let run_against = |url: String| RunOptions {
        repo: repo.clone(),
        work: work.path().join("runner"),
        peer: url,
        case: None,
        all: false,
        config: Some(config.clone()),
        partner: Some("PE-VUCE".into()),
    };
    let (rows, summary) = run(&run_against(url)).await.unwrap();
    assert!(summary.passed >= 8 && summary.failed == 0, "{rows:#?}");
    // An endpoint that does not answer: the preflight fails every case, with the reason.
    let (rows, summary) = run(&run_against("https://127.0.0.1:1/as4".into())).await.unwrap();
    assert_eq!(summary.passed, 0);
    assert!(matches!(&rows[0].verdict, Verdict::Failed(why) if why.contains("127.0.0.1:1")), "{rows:#?}");
    for n in nodes {
        n.node.stop().await;
    }
}
