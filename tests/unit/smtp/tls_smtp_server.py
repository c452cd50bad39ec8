#!/usr/bin/python3
"""A small SMTP server with STARTTLS for client_tls_test.cpp.

  tls_smtp_server.py certs DIR
      Makes test certificates with the openssl CLI: ca.pem/ca.key (the test
      CA), server.pem/server.key (CN and SAN DNS mx.test.example, SAN IP
      127.0.0.1, signed by the test CA) and other-ca.pem (an unrelated CA).

  tls_smtp_server.py serve --cert F --key F --spool DIR --mode MODE [--chunking] [--tls12]
      Listens on 127.0.0.1, a free port, and prints "PORT n" on stdout.
      MODE:
        starttls - offers STARTTLS and does it (Python's ssl, TLS 1.2+)
        plain    - does not offer STARTTLS
        refuse   - offers STARTTLS, answers 454
        garbage  - offers STARTTLS, answers 220, reads the ClientHello, answers bytes that are not TLS
        inject   - offers STARTTLS, sends "220" and a plaintext reply behind it
        stall    - offers STARTTLS, answers 220, then never answers the ClientHello
      Each message is stored as DIR/N.eml (the body as received, DATA
      unstuffed) and then DIR/N.meta ("tls=<version> <cipher>" or "tls=none"),
      before the final 250, so a client that saw the 250 finds both.

A raw asyncio server rather than aiosmtpd: it also speaks CHUNKING (BDAT)
and can misbehave on purpose.
"""
import argparse
import asyncio
import os
import ssl
import subprocess
import sys


def make_certs(d):
    os.makedirs(d, exist_ok=True)

    def run(*args):
        subprocess.run(["openssl", *args], check=True, cwd=d,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    ca_ext = ["-addext", "basicConstraints=critical,CA:TRUE",
              "-addext", "keyUsage=critical,keyCertSign,cRLSign"]
    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=ringmail test CA", *ca_ext)
    run("req", "-x509", *ec, "-keyout", "other-ca.key", "-out", "other-ca.pem", "-days", "2",
        "-subj", "/CN=ringmail other CA", *ca_ext)
    run("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=mx.test.example")
    with open(os.path.join(d, "server.ext"), "w") as f:
        f.write("subjectAltName=DNS:mx.test.example,IP:127.0.0.1\n"
                "basicConstraints=CA:FALSE\n"
                "keyUsage=critical,digitalSignature\n"
                "extendedKeyUsage=serverAuth\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "server.ext")


class server:
    def __init__(self, args):
        self.args = args
        self.count = 0
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if args.tls12:
            self.ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        self.ctx.load_cert_chain(args.cert, args.key)

    def store(self, body, tls):
        self.count += 1
        base = os.path.join(self.args.spool, str(self.count))
        with open(base + ".eml", "wb") as f:
            f.write(body)
        with open(base + ".meta.tmp", "w") as f:
            f.write("tls=" + (f"{tls[0]} {tls[1]}" if tls else "none") + "\n")
        os.rename(base + ".meta.tmp", base + ".meta")

    async def session(self, reader, writer):
        mode = self.args.mode
        tls = None
        chunks = []

        def send(text):
            writer.write(text.encode() + b"\r\n")

        try:
            send("220 test.example ESMTP")
            while True:
                line = await reader.readline()
                if not line:
                    break
                cmd = line.rstrip(b"\r\n").decode("latin-1")
                verb = cmd.split(" ", 1)[0].upper()
                if verb == "EHLO":
                    caps = ["test.example", "PIPELINING", "8BITMIME", "SIZE 100000000", "ENHANCEDSTATUSCODES"]
                    if self.args.chunking:
                        caps.append("CHUNKING")
                    if mode != "plain" and tls is None:
                        caps.append("STARTTLS")
                    for c in caps[:-1]:
                        send("250-" + c)
                    send("250 " + caps[-1])
                elif verb == "HELO":
                    send("250 test.example")
                elif verb == "STARTTLS":
                    if tls is not None or mode == "plain":
                        send("503 5.5.1 not now")
                    elif mode == "refuse":
                        send("454 4.7.0 TLS not available")
                    elif mode == "garbage":
                        send("220 2.0.0 go ahead")
                        await writer.drain()
                        # Wait for the ClientHello, so the garbage is read by
                        # the handshake (not as plaintext after the 220).
                        await reader.read(65536)
                        writer.write(b"this is not a TLS record at all\r\n" * 4)
                        await writer.drain()
                        await reader.read(65536)  # the client's alert or close
                        break
                    elif mode == "stall":
                        send("220 2.0.0 go ahead")
                        await writer.drain()
                        await reader.read(65536)  # the ClientHello, left unanswered
                        await reader.read(65536)  # until the client gives up
                        break
                    elif mode == "inject":
                        writer.write(b"220 2.0.0 go ahead\r\n250 2.0.0 injected\r\n")
                        await writer.drain()
                        await reader.read(65536)
                        break
                    else:
                        send("220 2.0.0 go ahead")
                        await writer.drain()
                        await writer.start_tls(self.ctx)
                        obj = writer.get_extra_info("ssl_object")
                        tls = (obj.version(), obj.cipher()[0])
                elif verb == "MAIL":
                    chunks = []
                    send("250 2.1.0 ok")
                elif verb == "RCPT":
                    send("250 2.1.5 ok")
                elif verb == "DATA":
                    send("354 go ahead")
                    await writer.drain()
                    body = bytearray()
                    while True:
                        l = await reader.readline()
                        if not l:
                            return
                        if l == b".\r\n":
                            break
                        if l.startswith(b"."):
                            l = l[1:]
                        body += l
                    self.store(bytes(body), tls)
                    send("250 2.0.0 queued")
                elif verb == "BDAT":
                    parts = cmd.split()
                    n = int(parts[1])
                    chunks.append(await reader.readexactly(n))
                    if len(parts) > 2 and parts[2].upper() == "LAST":
                        self.store(b"".join(chunks), tls)
                        chunks = []
                        send("250 2.0.0 queued")
                    else:
                        send(f"250 2.0.0 {n} octets")
                elif verb in ("RSET", "NOOP"):
                    send("250 2.0.0 ok")
                elif verb == "QUIT":
                    send("221 2.0.0 bye")
                    await writer.drain()
                    break
                else:
                    send("500 5.5.2 unknown command")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            try:
                writer.close()
            except Exception:
                pass

    async def run(self):
        srv = await asyncio.start_server(self.session, "127.0.0.1", 0, limit=1 << 20)
        port = srv.sockets[0].getsockname()[1]
        print(f"PORT {port}", flush=True)
        async with srv:
            await srv.serve_forever()


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "certs":
        make_certs(sys.argv[2])
        return
    p = argparse.ArgumentParser()
    p.add_argument("cmd", choices=["serve"])
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--spool", required=True)
    p.add_argument("--mode", default="starttls", choices=["starttls", "plain", "refuse", "garbage", "inject", "stall"])
    p.add_argument("--chunking", action="store_true")
    p.add_argument("--tls12", action="store_true", help="at most TLS 1.2")
    args = p.parse_args()
    try:
        asyncio.run(server(args).run())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
