//! `ventanilla pmode new`: a draft link from two parties' ids, endpoints and certificate files,
//! with the certificates inline, so the file both countries sign off is byte-identical on both
//! access points whatever their folder layouts. The draft is checked like any P-Mode file.

use std::path::Path;

/// One party as given on the command line: `ID,https://endpoint,SIGN.pem,ENC.pem`.
pub struct PartySpec {
    pub id: String,
    pub endpoint: String,
    pub sign_cert: String,
    pub enc_cert: String,
    pub country: Option<String>,
}

impl PartySpec {
    pub fn parse(value: &str) -> Result<PartySpec, String> {
        let fields: Vec<&str> = value.split(',').map(str::trim).collect();
        let [id, endpoint, sign, enc] = fields.as_slice() else {
            return Err(format!("'{value}' is not ID,https://endpoint,SIGN-CERT.pem,ENC-CERT.pem"));
        };
        let read = |file: &str| -> Result<String, String> {
            let cert = crate::pki::keys::load_cert(Path::new(file)).map_err(|e| e.to_string())?;
            String::from_utf8(cert.to_pem().map_err(|e| e.to_string())?).map_err(|e| e.to_string())
        };
        // A party id like CL-SICEX names its country first.
        let country =
            id.split(['-', '_']).next().filter(|c| c.len() == 2 && c.chars().all(|ch| ch.is_ascii_uppercase()));
        Ok(PartySpec {
            id: id.to_string(),
            endpoint: endpoint.to_string(),
            sign_cert: read(sign)?,
            enc_cert: read(enc)?,
            country: country.map(str::to_owned),
        })
    }
}

/// The draft's text.
pub fn draft(id: &str, profile: &str, parties: &[PartySpec; 2], legs: &[String]) -> String {
    let mut out = format!(
        "# P-Mode of the {} <-> {} link, drafted by `ventanilla pmode new`.\n\
         # One symmetric file: both access points load it unchanged (the certificates are inline).\n\
         id      = \"{id}\"\nprofile = \"{profile}\"\nagreement = \"urn:pacific-alliance:as4:agreement:{id}\"\n",
        parties[0].id, parties[1].id
    );
    for p in parties {
        out.push_str(&format!(
            "\n[[party]]\nid       = \"{}\"\ntype     = \"urn:oasis:names:tc:ebcore:partyid-type:unregistered:pacific-alliance\"\n",
            p.id
        ));
        if let Some(c) = &p.country {
            out.push_str(&format!("country  = \"{c}\"\n"));
        }
        out.push_str(&format!(
            "endpoint = \"{}\"\nsign_cert = \"\"\"\n{}\"\"\"\nenc_cert = \"\"\"\n{}\"\"\"\n",
            p.endpoint, p.sign_cert, p.enc_cert
        ));
    }
    for leg in legs {
        let (service, action, document) = match leg.as_str() {
            "origin" => ("urn:pacific-alliance:as4:service:origin", "CertificateOfOrigin", "origin"),
            _ => ("urn:pacific-alliance:as4:service:ephyto", "SPSCertificate", "ephyto"),
        };
        out.push_str(&format!(
            "\n[[leg]]\nname        = \"{leg}\"\nservice     = \"{service}\"\naction      = \"{action}\"\ndocument    = \"{document}\"\nmax_payload = \"20MiB\"\ncompression = true\n"
        ));
    }
    out.push_str(
        "\n[reliability]\nretry            = [\"1m\", \"5m\", \"15m\", \"1h\", \"4h\"]\nduplicate_window = \"30d\"\n\n\
         [security]\ntoken_reference = \"bst\"\n\n[transport]\ntls_client_auth = false\ntimeout         = \"60s\"\n",
    );
    out
}
