#!/usr/bin/env python3
"""A test peer around the Python `as4` package (pinned in requirements.txt).

`as4` 0.2.0 publishes one profile, Peppol (edelivery-1.15 cryptography: RSA-SHA256, RSA-OAEP
with MGF1-SHA256, AES-128-GCM, gzip, signed NRR receipts). Ventanilla talks to it over a P-Mode
that uses Peppol's party type, service, action and message properties.

  serve  an HTTPS endpoint that receives with as4 and answers with its signal
  send   builds a message with as4, POSTs it, and verifies the receipt it gets back
  sbdh   writes an SBDH-wrapped document that an as4 receiver accepts as a payload
"""

import argparse
import http.server
import json
import pathlib
import ssl
import sys

import urllib3
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from as4 import AS4LocalPrivateKey, SecurityPolicy, pinned_certificates
from as4.peppol import (
    build_peppol_message,
    create_peppol_external_party,
    create_peppol_internal_party,
    parse_peppol_message,
    parse_peppol_receipt,
)

DOCUMENT_TYPE = (
    "urn:oasis:names:specification:ubl:schema:xsd:Invoice-2::Invoice"
    "##urn:cen.eu:en16931:2017#compliant#urn:fdc:peppol.eu:2017:poacc:billing:3.0::2.1"
)
PROCESS = "urn:fdc:peppol.eu:2017:poacc:billing:01:1.0"
SENDER = "9932:1111111111"
RECIPIENT = "9932:2222222222"


def certificate(path):
    return x509.load_pem_x509_certificate(pathlib.Path(path).read_bytes())


def private_key(path):
    return AS4LocalPrivateKey(serialization.load_pem_private_key(pathlib.Path(path).read_bytes(), password=None))


def parties(args):
    local = create_peppol_internal_party(party_id=args.party, certificate=certificate(args.cert), private_key=private_key(args.key))
    if not hasattr(args, "partner"):
        return local, None
    remote = create_peppol_external_party(party_id=args.partner, certificate=certificate(args.partner_cert))
    return local, remote


def build(args, payload, sender=SENDER, recipient=RECIPIENT):
    local, remote = parties(args)
    return build_peppol_message(
        payload=payload,
        local_party=local,
        remote_party=remote,
        sender=sender,
        recipient=recipient,
        sender_country_id="CL",
        document_type_identifier_scheme="busdox-docid-qns",
        document_type_identifier_value=DOCUMENT_TYPE,
        process_identifier=PROCESS,
    )


def serve(args):
    local, remote = parties(args)
    policy = SecurityPolicy(signer_resolver=pinned_certificates(remote.credentials.certificate))
    out = pathlib.Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)

    class Handler(http.server.BaseHTTPRequestHandler):
        def read_body(self):
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                    if size == 0:
                        self.rfile.readline()
                        return b"".join(chunks)
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
            return self.rfile.read(int(self.headers.get("Content-Length", "0")))

        def do_POST(self):
            body = self.read_body()
            headers = {k: v for k, v in self.headers.items() if k.lower() != "transfer-encoding"}
            record = {"ok": False}
            try:
                receiving = parse_peppol_message(request_headers=headers, request_body=body, local_party=local, security_policy=policy)
                record["message_id"] = receiving.message_id
                if receiving.successful:
                    payload = next(iter(receiving.message.decrypted_data.values()))
                    (out / f"{len(list(out.glob('*.xml')))}.xml").write_bytes(payload)
                    record["ok"] = True
                else:
                    record["error"] = str(receiving.error)
                signal_headers, signal = receiving.build_signal()
            except Exception as exception:  # report, answer 500: the test reads the record
                record["error"] = f"{type(exception).__name__}: {exception}"
                signal_headers, signal = {"Content-Type": "text/plain"}, str(exception).encode()
                self.send_response(500)
            else:
                self.send_response(200)
            with (out / "received.jsonl").open("a") as log:
                log.write(json.dumps(record) + "\n")
            for name, value in signal_headers.items():
                if name.lower() != "content-length":
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(signal)))
            self.end_headers()
            self.wfile.write(signal)

        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(args.tls_cert, args.tls_key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    print(f"listening on {server.server_address[1]}", flush=True)
    server.serve_forever()


def send(args):
    payload = pathlib.Path(args.payload).read_bytes()
    local, remote = parties(args)
    message = build(args, payload)
    body, boundary = message.get_request_data()
    headers = message.get_http_headers(boundary)
    http = urllib3.PoolManager(ca_certs=args.ca, cert_reqs="CERT_REQUIRED")
    response = http.request("POST", args.url, body=body, headers=headers)
    result = {"message_id": message.message_id, "status": response.status}
    try:
        receipt = parse_peppol_receipt(response.data, remote.credentials.certificate)
        if receipt.error is not None:
            result["error"] = str(receipt.error)
        else:
            receipt.verify_non_repudiation(message.signed_references)
            result["receipt_verified"] = True
    except Exception as exception:
        result["error"] = f"{type(exception).__name__}: {exception}"
        result["response"] = response.data.decode("utf-8", "replace")[:2000]
    print(json.dumps(result))
    return 0 if result.get("receipt_verified") else 1


def sbdh(args):
    """as4 wraps a document in an SBDH when it builds a message; receive our own to get it."""
    local, _ = parties(args)
    own = create_peppol_external_party(party_id=args.party, certificate=certificate(args.cert))
    document = pathlib.Path(args.payload).read_bytes()
    message = build_peppol_message(
        payload=document, local_party=local, remote_party=own, sender=args.sender, recipient=args.recipient,
        sender_country_id="CL", document_type_identifier_scheme="busdox-docid-qns",
        document_type_identifier_value=DOCUMENT_TYPE, process_identifier=PROCESS,
    )
    body, boundary = message.get_request_data()
    policy = SecurityPolicy(signer_resolver=pinned_certificates(local.credentials.certificate))
    receiving = parse_peppol_message(request_headers=message.get_http_headers(boundary), request_body=body, local_party=local, security_policy=policy)
    if not receiving.successful:
        print(f"cannot build an SBDH: {receiving.error}", file=sys.stderr)
        return 1
    pathlib.Path(args.out).write_bytes(next(iter(receiving.message.decrypted_data.values())))
    return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("serve", "send", "sbdh"):
        p = sub.add_parser(name)
        p.add_argument("--party", required=True)
        p.add_argument("--key", required=True)
        p.add_argument("--cert", required=True)
        if name != "sbdh":
            p.add_argument("--partner", required=True)
            p.add_argument("--partner-cert", required=True)
        if name == "serve":
            p.add_argument("--port", type=int, default=0)
            p.add_argument("--tls-cert", required=True)
            p.add_argument("--tls-key", required=True)
            p.add_argument("--out-dir", required=True)
        if name == "send":
            p.add_argument("--url", required=True)
            p.add_argument("--ca", required=True)
            p.add_argument("--payload", required=True)
        if name == "sbdh":
            p.add_argument("--payload", required=True)
            p.add_argument("--sender", default=SENDER)
            p.add_argument("--recipient", default=RECIPIENT)
            p.add_argument("--out", required=True)
    args = parser.parse_args()
    return {"serve": serve, "send": send, "sbdh": sbdh}[args.command](args) or 0


if __name__ == "__main__":
    sys.exit(main())
