#!/usr/bin/env python3
"""Make the certificates the TLS tests use, with certtool (GnuTLS):

  ca.pem ca.key            a test CA
  server.pem server.key    localhost and 127.0.0.1, signed by the CA
  other.pem                the same key, for other.example only (wrong name)
  expired.pem              the same key, expired a year ago
  rogue-ca.pem             another CA; rogue.pem (same key) signed by it
  client.pem client.key    a client certificate signed by the CA

usage: make_certs.py OUTDIR   (exit 77 when certtool is missing)
"""
import os
import shutil
import subprocess
import sys


def certtool(*args):
    subprocess.run(["certtool", *args], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)


def template(path, lines):
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def main():
    if len(sys.argv) != 2:
        print(__doc__)
        return 2
    if not shutil.which("certtool"):
        print("certtool not found (Debian: gnutls-bin)", file=sys.stderr)
        return 77
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    p = lambda name: os.path.join(out, name)
    for key in ("ca.key", "server.key", "rogue-ca.key", "client.key"):
        certtool("--generate-privkey", "--key-type=ecdsa", "--curve=secp256r1",
                 "--outfile", p(key))
    template(p("ca.tmpl"), ['cn = "microstream test CA"', "ca", "cert_signing_key",
                            "expiration_days = 3650"])
    certtool("--generate-self-signed", "--load-privkey", p("ca.key"),
             "--template", p("ca.tmpl"), "--outfile", p("ca.pem"))
    template(p("rogue.tmpl"), ['cn = "some other CA"', "ca", "cert_signing_key",
                               "expiration_days = 3650"])
    certtool("--generate-self-signed", "--load-privkey", p("rogue-ca.key"),
             "--template", p("rogue.tmpl"), "--outfile", p("rogue-ca.pem"))
    server = ['cn = "localhost"', 'dns_name = "localhost"', 'ip_address = "127.0.0.1"',
              "tls_www_server", "signing_key", "encryption_key"]
    template(p("server.tmpl"), server + ["expiration_days = 3650"])
    certtool("--generate-certificate", "--load-privkey", p("server.key"),
             "--load-ca-certificate", p("ca.pem"), "--load-ca-privkey", p("ca.key"),
             "--template", p("server.tmpl"), "--outfile", p("server.pem"))
    template(p("other.tmpl"), ['cn = "other.example"', 'dns_name = "other.example"',
                               "tls_www_server", "signing_key", "encryption_key",
                               "expiration_days = 3650"])
    certtool("--generate-certificate", "--load-privkey", p("server.key"),
             "--load-ca-certificate", p("ca.pem"), "--load-ca-privkey", p("ca.key"),
             "--template", p("other.tmpl"), "--outfile", p("other.pem"))
    template(p("expired.tmpl"), server + ['activation_date = "2020-01-01 00:00:00"',
                                          'expiration_date = "2021-01-01 00:00:00"'])
    certtool("--generate-certificate", "--load-privkey", p("server.key"),
             "--load-ca-certificate", p("ca.pem"), "--load-ca-privkey", p("ca.key"),
             "--template", p("expired.tmpl"), "--outfile", p("expired.pem"))
    template(p("rogue-srv.tmpl"), server + ["expiration_days = 3650"])
    certtool("--generate-certificate", "--load-privkey", p("server.key"),
             "--load-ca-certificate", p("rogue-ca.pem"), "--load-ca-privkey",
             p("rogue-ca.key"), "--template", p("rogue-srv.tmpl"),
             "--outfile", p("rogue.pem"))
    template(p("client.tmpl"), ['cn = "test-client"', "tls_www_client", "signing_key",
                                "expiration_days = 3650"])
    certtool("--generate-certificate", "--load-privkey", p("client.key"),
             "--load-ca-certificate", p("ca.pem"), "--load-ca-privkey", p("ca.key"),
             "--template", p("client.tmpl"), "--outfile", p("client.pem"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
