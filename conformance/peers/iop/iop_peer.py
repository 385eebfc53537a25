#!/usr/bin/env python3
"""A legacy Pacific Alliance IOP node, for Ventanilla's tests and demo.

Written from docs/iop.md alone (no third-party code): it behaves as a CrimsonLogic IOP node
serving `EnvioCertificadoFitosanitario` (SOAP 1.1, plain-text UsernameToken, over HTTPS) and
as its client. It is deliberately independent of Ventanilla: Python's standard library for
HTTP, TLS and XML, and the `xmlsec1` command for the SPS certificate's XML signature.

    iop_peer.py serve --port P --tls-cert C --tls-key K --id VUCEEC --country EC
                      --user U --password-env VAR --inbox DIR [--answer rcb|err|fault]
                      [--ca CA.pem] [--ready FILE]
    iop_peer.py send  --url URL --cafile CA.pem --user U --password-env VAR
                      --from-id ID --from-country CC --to-id ID --to-country CC
                      --document FILE --sign-key K --sign-cert C [--algorithm rsa-sha1|rsa-sha256]
                      [--transaction ID] [--codigo-interaccion C] [--id-servicio S]

`serve` answers RCB for a valid request, ERR or a MensajeFalla (SOAP fault) with one
DetallesError per finding otherwise, the same answer again for a repeated IDdeTransaccion,
and writes each accepted certificate to `--inbox` (atomically, `<IDdeTransaccion>.xml`).
`send` prints the answer as one JSON line.
"""

import argparse
import datetime
import hmac
import http.server
import json
import os
import re
import ssl
import subprocess
import sys
import tempfile
import threading
import urllib.error
import urllib.request
import uuid
import xml.etree.ElementTree as ET
from xml.sax.saxutils import escape

SOAP = "http://schemas.xmlsoap.org/soap/envelope/"
WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
PASSWORD_TEXT = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0#PasswordText"
CFS = "http://iop.crimsonlogic.com/EnvioCertificadoFitosanitario"
CAB = "http://iop.crimsonlogic.com/Cabecera"
ACK = "http://iop.crimsonlogic.com/AcuseRecibo"
FALLA = "http://iop.crimsonlogic.com/Falla"
ERR = "http://iop.crimsonlogic.com/Error"
DS = "http://www.w3.org/2000/09/xmldsig#"
SOAP_ACTION = "http://iop.crimsonlogic.com/EnvioCertificadoFitosanitarioWS/envioCertificadoFitosanitarioOperation"
MAX_REQUEST = 32 << 20

# docs/iop.md section 3, in schema order: (element, pattern, required)
CABECERA = [
    ("CodigoInteraccion", r"[a-zA-Z0-9.]{8,16}", True),
    ("IDdeServicio", r"[a-zA-Z0-9.]{8,16}", True),
    ("IDdeRemitente", r"[a-zA-Z0-9]{3,10}", True),
    ("PaisdeRemitente", r"[A-Z][A-Z]", True),
    ("IDdeDestinatario", r"[a-zA-Z0-9]{3,10}", True),
    ("PaisdeDestinatario", r"[A-Z][A-Z]", True),
    ("IDdeTransaccion", r"[a-zA-Z0-9-]{12,36}", True),
    ("EstadoTransaccion", r".{1,5}", True),
    ("FechaHora", r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)?", True),
    ("TipodeDocumento", r".{1,5}", True),
    ("IDdeDocumento", r"\S(?:\S| (?! ))*|", True),
    ("IDdeTransaccionOriginal", r"[a-zA-Z0-9-]{12,36}", False),
]

# Our codes (a real node's are unknown): distinct from Ventanilla's, so tests see them kept.
AUTH, FIELD, SIGNATURE, ADDRESS = "IOP01", "IOP02", "IOP03", "IOP04"


def now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def cabecera_xml(cab):
    fields = "".join(
        f"<cab:{name}>{escape(cab[name])}</cab:{name}>" for name, _, required in CABECERA if required or cab.get(name)
    )
    return f'<cab:Cabecera xmlns:cab="{CAB}" VersionEsquema="0.2">{fields}</cab:Cabecera>'


def acuse_xml(cab, codigo, glosa):
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><soap:Envelope xmlns:soap="{SOAP}"><soap:Body>'
        f'<ack:AcuseRecibo xmlns:ack="{ACK}" VersionEsquema="0.1">{cabecera_xml(cab)}'
        f"<ack:CodigoAcuseRecibo>{codigo}</ack:CodigoAcuseRecibo><ack:GlosaAcuseRecibo>{escape(glosa[:300])}</ack:GlosaAcuseRecibo>"
        f"<ack:FechaHoraAcuseRecibo>{now()}</ack:FechaHoraAcuseRecibo></ack:AcuseRecibo></soap:Body></soap:Envelope>"
    )


def falla_xml(cab, detalles, faultcode="Client"):
    errors = "".join(
        f"<err:DetallesError><err:CodigodeError>{escape(c[:5])}</err:CodigodeError>"
        f"<err:MensajedeError>{escape(m[:300])}</err:MensajedeError></err:DetallesError>"
        for c, m in detalles[:99]
    )
    header = cabecera_xml(cab) if cab else ""
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><soap:Envelope xmlns:soap="{SOAP}"><soap:Body><soap:Fault>'
        f"<faultcode>soap:{faultcode}</faultcode><faultstring>{escape(detalles[0][1][:300])}</faultstring><detail>"
        f'<falla:MensajeFalla xmlns:falla="{FALLA}" xmlns:err="{ERR}" VersionEsquema="0.1">{header}{errors}'
        f"</falla:MensajeFalla></detail></soap:Fault></soap:Body></soap:Envelope>"
    )


def read_cabecera(element):
    """The Cabecera's values and one finding per missing or malformed field."""
    cab, findings = {}, []
    for name, pattern, required in CABECERA:
        child = element.find(f"{{{CAB}}}{name}")
        if child is None:
            if required:
                findings.append((FIELD, f"{name} is missing"))
            continue
        value = child.text or ""
        cab[name] = value
        if not re.fullmatch(pattern, value) or (name == "IDdeDocumento" and not 1 <= len(value) <= 100):
            findings.append((FIELD, f"{name} '{value[:60]}' breaks its type"))
    return cab, findings


def has_signature(document: bytes) -> bool:
    root = ET.fromstring(document)
    return root.find(f"{{{DS}}}Signature") is not None


def xmlsec(args, data: bytes):
    """Runs xmlsec1 on `data` (a file it reads); returns (returncode, stdout bytes, stderr text)."""
    with tempfile.TemporaryDirectory() as tmp:
        source = os.path.join(tmp, "in.xml")
        with open(source, "wb") as f:
            f.write(data)
        out = os.path.join(tmp, "out.xml")
        result = subprocess.run(["xmlsec1", *args, "--output", out, source], capture_output=True)
        produced = open(out, "rb").read() if os.path.exists(out) else b""
        return result.returncode, produced, result.stderr.decode(errors="replace")


def sign(document: bytes, key: str, cert: str, algorithm: str) -> bytes:
    """An enveloped signature over the root (id SPSCERT), as the 2019 IOP sample carries."""
    text = document.decode()
    target = ET.fromstring(document).get("id")
    start = re.search(r"<(?![?!])([^\s>/]+)", text)
    name = start.group(1)
    if target is None:
        text, target = f'{text[:start.end()]} id="SPSCERT"{text[start.end():]}', "SPSCERT"
    if algorithm == "rsa-sha1":
        c14n, method, digest = "http://www.w3.org/TR/2001/REC-xml-c14n-20010315", DS + "rsa-sha1", DS + "sha1"
    else:
        c14n = "http://www.w3.org/2001/10/xml-exc-c14n#"
        method, digest = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256", "http://www.w3.org/2001/04/xmlenc#sha256"
    template = (
        f'<ds:Signature xmlns:ds="{DS}"><ds:SignedInfo><ds:CanonicalizationMethod Algorithm="{c14n}"/>'
        f'<ds:SignatureMethod Algorithm="{method}"/><ds:Reference URI="#{target}"><ds:Transforms>'
        f'<ds:Transform Algorithm="{DS}enveloped-signature"/></ds:Transforms><ds:DigestMethod Algorithm="{digest}"/>'
        f"<ds:DigestValue/></ds:Reference></ds:SignedInfo><ds:SignatureValue/><ds:KeyInfo><ds:X509Data>"
        f"<ds:X509Certificate/></ds:X509Data></ds:KeyInfo></ds:Signature>"
    )
    end = text.rindex(f"</{name}")
    code, signed, err = xmlsec(
        ["--sign", "--privkey-pem", f"{key},{cert}", "--id-attr:id", name.split(":")[-1]],
        (text[:end] + template + text[end:]).encode(),
    )
    if code != 0:
        raise SystemExit(f"xmlsec1 could not sign: {err}")
    return signed


def verify(document: bytes, ca: str):
    """(ok, message) for the certificate's enveloped signature, its signer chained to `ca`."""
    name = ET.fromstring(document).tag.split("}")[-1]
    code, _, err = xmlsec(["--verify", "--id-attr:id", name, "--trusted-pem", ca], document)
    return code == 0, err.strip().splitlines()[-1] if err.strip() else ""


class Node:
    def __init__(self, args):
        self.args = args
        self.password = os.environ.get(args.password_env, "")
        self.answers = {}
        self.lock = threading.Lock()
        os.makedirs(args.inbox, exist_ok=True)

    def handle(self, body: bytes):
        """(HTTP status, SOAP text) for one request."""
        if b"<!DOCTYPE" in body or b"<!ENTITY" in body:
            return 500, falla_xml(None, [(FIELD, "document type declarations are refused")])
        try:
            envelope = ET.fromstring(body)
        except ET.ParseError as e:
            return 500, falla_xml(None, [(FIELD, f"not well-formed: {e}")])
        token = envelope.find(f"{{{SOAP}}}Header/{{{WSSE}}}Security/{{{WSSE}}}UsernameToken")
        envio = envelope.find(f"{{{SOAP}}}Body/{{{CFS}}}EnvioCertificadoFitosanitario")
        if envio is None or envio.find(f"{{{CAB}}}Cabecera") is None:
            return 500, falla_xml(None, [(FIELD, "no EnvioCertificadoFitosanitario with a Cabecera")])
        cab, findings = read_cabecera(envio.find(f"{{{CAB}}}Cabecera"))
        user = token.findtext(f"{{{WSSE}}}Username", "") if token is not None else ""
        password = token.findtext(f"{{{WSSE}}}Password", "") if token is not None else ""
        if not (hmac.compare_digest(user.encode(), self.args.user.encode()) and hmac.compare_digest(password.encode(), self.password.encode())):
            return 500, falla_xml(cab, [(AUTH, "usuario o clave incorrectos")])
        if cab.get("IDdeDestinatario") != self.args.id or cab.get("PaisdeDestinatario") != self.args.country:
            findings.append((ADDRESS, f"IDdeDestinatario {cab.get('IDdeDestinatario')} is not this node ({self.args.id})"))
        if findings:
            return 500, falla_xml(cab, findings)
        transaction = cab["IDdeTransaccion"]
        with self.lock:
            if transaction in self.answers:
                return 200, self.answers[transaction]
        document = (envio.findtext(f"{{{CFS}}}SignedSPSCert") or "").encode()
        if self.args.ca:
            try:
                ok, why = verify(document, self.args.ca) if has_signature(document) else (False, "unsigned")
            except ET.ParseError as e:
                ok, why = False, f"not well-formed: {e}"
            if not ok:
                return 500, falla_xml(cab, [(SIGNATURE, f"firma del certificado no valida: {why}")])
        if self.args.answer == "fault":
            return 500, falla_xml(cab, [("IOP99", "servicio no disponible")], "Server")
        if self.args.answer == "err":
            answer = acuse_xml(cab, "ERR", "Certificado rechazado por la autoridad fitosanitaria (prueba)")
        else:
            path = os.path.join(self.args.inbox, f"{transaction}.xml")
            with open(path + ".tmp", "wb") as f:
                f.write(document)
                f.flush()
                os.fsync(f.fileno())
            os.replace(path + ".tmp", path)
            with open(os.path.join(self.args.inbox, f"{transaction}.json"), "w") as f:
                json.dump(cab, f)
            answer = acuse_xml(cab, "RCB", "Recibido")
        with self.lock:
            self.answers[transaction] = answer
        return 200, answer


def serve(args):
    node = Node(args)

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_REQUEST:
                status, text = 500, falla_xml(None, [(FIELD, "request too large")])
                self.close_connection = True
            else:
                status, text = node.handle(self.rfile.read(length))
            data = text.encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/xml; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format, *a):
            sys.stderr.write("iop-peer: " + format % a + "\n")

    server = http.server.ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(args.tls_cert, args.tls_key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    if args.ready:
        with open(args.ready + ".tmp", "w") as f:
            f.write(str(server.server_address[1]))
        os.replace(args.ready + ".tmp", args.ready)
    server.serve_forever()


def send(args):
    document = open(args.document, "rb").read()
    if not has_signature(document):
        document = sign(document, args.sign_key, args.sign_cert, args.algorithm)
    number = ET.fromstring(document).find(".//{*}SPSExchangedDocument/{*}ID")
    cab = {
        "CodigoInteraccion": args.codigo_interaccion,
        "IDdeServicio": args.id_servicio,
        "IDdeRemitente": args.from_id,
        "PaisdeRemitente": args.from_country,
        "IDdeDestinatario": args.to_id,
        "PaisdeDestinatario": args.to_country,
        "IDdeTransaccion": args.transaction or f"{args.from_country}{uuid.uuid4().hex[:20].upper()}",
        "EstadoTransaccion": "ECIOP",
        "FechaHora": now(),
        "TipodeDocumento": "FS",
        "IDdeDocumento": number.text if number is not None else "",
    }
    password = os.environ.get(args.password_env, "")
    envelope = (
        f'<?xml version="1.0" encoding="UTF-8"?><soap:Envelope xmlns:soap="{SOAP}"><soap:Header>'
        f'<wsse:Security xmlns:wsse="{WSSE}"><wsse:UsernameToken><wsse:Username>{escape(args.user)}</wsse:Username>'
        f'<wsse:Password Type="{PASSWORD_TEXT}">{escape(password)}</wsse:Password></wsse:UsernameToken></wsse:Security>'
        f'</soap:Header><soap:Body><cfs:EnvioCertificadoFitosanitario xmlns:cfs="{CFS}" VersionEsquema="0.4">'
        f"{cabecera_xml(cab)}<cfs:SignedSPSCert>{escape(document.decode())}</cfs:SignedSPSCert>"
        f"</cfs:EnvioCertificadoFitosanitario></soap:Body></soap:Envelope>"
    )
    request = urllib.request.Request(
        args.url,
        data=envelope.encode(),
        headers={"Content-Type": "text/xml; charset=utf-8", "SOAPAction": f'"{SOAP_ACTION}"'},
    )
    context = ssl.create_default_context(cafile=args.cafile)
    try:
        with urllib.request.urlopen(request, context=context, timeout=60) as response:
            status, body = response.status, response.read()
    except urllib.error.HTTPError as e:
        status, body = e.code, e.read()
    result = {"status": status, "transaction": cab["IDdeTransaccion"], "number": cab["IDdeDocumento"]}
    try:
        answer = ET.fromstring(body)
        acuse = answer.find(f"{{{SOAP}}}Body/{{{ACK}}}AcuseRecibo")
        if acuse is not None:
            result["codigo"] = acuse.findtext(f"{{{ACK}}}CodigoAcuseRecibo")
            result["glosa"] = acuse.findtext(f"{{{ACK}}}GlosaAcuseRecibo")
            result["answered_transaction"] = acuse.findtext(f"{{{CAB}}}Cabecera/{{{CAB}}}IDdeTransaccion")
        fault = answer.find(f"{{{SOAP}}}Body/{{{SOAP}}}Fault")
        if fault is not None:
            result["faultcode"] = fault.findtext("faultcode")
            result["detalles"] = [
                [d.findtext(f"{{{ERR}}}CodigodeError"), d.findtext(f"{{{ERR}}}MensajedeError")]
                for d in fault.iter(f"{{{ERR}}}DetallesError")
            ]
    except ET.ParseError:
        result["body"] = body[:300].decode(errors="replace")
    print(json.dumps(result))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--port", type=int, default=0)
    s.add_argument("--tls-cert", required=True)
    s.add_argument("--tls-key", required=True)
    s.add_argument("--id", required=True)
    s.add_argument("--country", required=True)
    s.add_argument("--user", required=True)
    s.add_argument("--password-env", required=True)
    s.add_argument("--inbox", required=True)
    s.add_argument("--answer", choices=["rcb", "err", "fault"], default="rcb")
    s.add_argument("--ca", help="verify SPS signatures against this CA (PEM)")
    s.add_argument("--ready", help="write the listening port to this file once ready")
    c = sub.add_parser("send")
    c.add_argument("--url", required=True)
    c.add_argument("--cafile", required=True)
    c.add_argument("--user", required=True)
    c.add_argument("--password-env", required=True)
    c.add_argument("--from-id", required=True)
    c.add_argument("--from-country", required=True)
    c.add_argument("--to-id", required=True)
    c.add_argument("--to-country", required=True)
    c.add_argument("--document", required=True)
    c.add_argument("--sign-key", required=True)
    c.add_argument("--sign-cert", required=True)
    c.add_argument("--algorithm", choices=["rsa-sha1", "rsa-sha256"], default="rsa-sha1")
    c.add_argument("--transaction")
    c.add_argument("--codigo-interaccion", default="IOP.MC.101")
    c.add_argument("--id-servicio", default="IOP.FS.001")
    args = parser.parse_args()
    serve(args) if args.command == "serve" else send(args)


if __name__ == "__main__":
    main()
