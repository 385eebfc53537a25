"""Writes conformance/COVERAGE.md from the case files: python3 conformance/tools/coverage.py"""
import tomllib, glob, os
HERE = os.path.dirname(os.path.abspath(__file__))
rows=[]; counts={}
for f in sorted(glob.glob(os.path.join(HERE, '..', 'cases', '*.toml'))):
    c=tomllib.load(open(f,'rb'))
    counts[c['status']]=counts.get(c['status'],0)+1
    run=c.get('run')
    if run:
        how=f"{run['action']}" + (f" ({run.get('profile','none')})" if run['action'] in ('inject','exchange','inspect','scripted') else "") + (": "+", ".join(run.get('mutations',[])) if run.get('mutations') else "") 
        exp=run['expect']['outcome'] + (" "+"/".join(run['expect'].get('codes',[])) if run['expect'].get('codes') else "")
        where=f"{how} → {exp}"
    else:
        where=c['reason']
    rows.append(f"| {c['id']} | {c['status']} | {c['title'].replace('|','/')} | {where.replace('|','/')} |")
out=["# Where each of the 89 conformance cases stands","",
"Written by `conformance/tools/coverage.py` from `conformance/cases/*.toml` (the cases themselves are the source; rerun",
"`make conformance` for the live result). `implemented`: run by `ventanilla conformance run`",
"against the self peer (two sets of Ventanilla APs over HTTPS on loopback, plus a scripted",
"partner endpoint for the sender's cases). `unit-test`: checked by a named unit or",
"integration test of the crate, not yet by the runner. The phase4 and Python peers are not in",
"the runner yet (Python runs in `make test`: tests/interop_python.rs).","",
"Counts: " + ", ".join(f"{k} {v}" for k,v in sorted(counts.items())) + f" (of {sum(counts.values())}).","",
"| # | Status | Case | How it is run / why not |","|---|---|---|---|"]+rows
open(os.path.join(HERE, '..', 'COVERAGE.md'),'w').write("\n".join(out)+"\n")
print(counts)
