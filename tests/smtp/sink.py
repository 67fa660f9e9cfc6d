#!/usr/bin/python3
"""A real SMTP server for the integration tests, with faults on demand.

    sink.py --port PORT --maildir DIR [--mode MODE] [--control FILE]
            [--auth USER:PASSWORD] [--exit-on-stdin-eof]

Listens on 127.0.0.1:PORT (0 picks a free port) and, once listening, prints
exactly one line, `ready <port>`, to stdout (flushed). Needs `aiosmtpd`
(Debian: python3-aiosmtpd; PyPI: aiosmtpd); without it, it says so on stderr
and exits with status 3.

Stored messages. Each message accepted is numbered n = 1, 2, ... (a restart
on the same DIR continues after the highest number there) and written as:
  DIR/<n>.json  {"mail_from": str, "rcpt_tos": [str], "received_at": unix ms,
                 "mail_options": [str], "auth_user": str or null}
  DIR/<n>.eml   the exact DATA content (dot-unstuffed RFC 5322 bytes, CRLF
                line ends as sent, without the terminating "." line)
Both are written atomically (a hidden temporary file, then a rename), the
.json first: once <n>.eml exists, both files are complete. Nothing else
matching `<digits>.eml` is ever written to DIR.

Modes. What happens to a message is decided when its DATA content has been
received (the terminating "." line read), by the current mode:
  accept    250, and the message is stored (the default)
  tempfail  451 4.3.0 try again later      (nothing stored)
  reject    550 5.1.1 mailbox unavailable  (nothing stored)
  hang      no answer ever: the connection stays open until the client drops
            it (nothing stored)
  drop      the server closes the TCP connection without answering (nothing
            stored)
The mode is --mode, unless --control FILE is given and FILE holds a mode:
FILE is read again for every message, so a test changes the behaviour of
the running server by rewriting FILE (write a temporary file and rename it
over FILE, so a reader never sees it half-written). A missing or empty
FILE means --mode. An unknown mode in FILE answers 451 and is reported on
stderr.

Authentication. With --auth USER:PASSWORD, AUTH PLAIN and AUTH LOGIN are
offered without TLS and required: MAIL before a successful AUTH gets
`530 5.7.0 Authentication required`, wrong credentials get 535. Without
--auth, AUTH is not offered at all.

Life. SIGTERM or SIGINT closes the listener and every open connection and
exits with status 0; SIGKILL works as always. With --exit-on-stdin-eof it
also exits when its standard input reaches end of file, so a test process
that dies (and so closes the pipe it holds) leaves no server behind.
"""

import argparse
import asyncio
import json
import logging
import os
import re
import signal
import sys
import time
import warnings

try:
    from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword
except ImportError as error:
    print(
        f"sink.py: cannot import aiosmtpd with {sys.executable} ({error}); "
        "install Debian's python3-aiosmtpd or PyPI's aiosmtpd",
        file=sys.stderr,
        flush=True,
    )
    sys.exit(3)

MODES = ("accept", "tempfail", "reject", "hang", "drop")
EML = re.compile(r"^(\d+)\.eml$")


def write_atomically(path, data):
    folder, name = os.path.split(path)
    tmp = os.path.join(folder, f".{name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def as_text(value):
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return value


class Sink:
    def __init__(self, maildir, mode, control):
        self.maildir = maildir
        self.default_mode = mode
        self.control = control
        numbers = [int(m.group(1)) for m in map(EML.match, os.listdir(maildir)) if m]
        self.last = max(numbers, default=0)

    def mode(self):
        if self.control:
            try:
                with open(self.control, encoding="utf-8") as f:
                    text = f.read().strip().lower()
            except FileNotFoundError:
                text = ""
            if text:
                return text
        return self.default_mode

    async def handle_DATA(self, server, session, envelope):
        mode = self.mode()
        if mode == "accept":
            self.last += 1
            n = self.last
            meta = {
                "mail_from": as_text(envelope.mail_from),
                "rcpt_tos": [as_text(r) for r in envelope.rcpt_tos],
                "received_at": int(time.time() * 1000),
                "mail_options": [as_text(o) for o in envelope.mail_options],
                "auth_user": as_text(session.login_data),
            }
            write_atomically(
                os.path.join(self.maildir, f"{n}.json"),
                json.dumps(meta).encode("utf-8"),
            )
            write_atomically(
                os.path.join(self.maildir, f"{n}.eml"), envelope.original_content
            )
            return "250 2.0.0 OK stored as %d" % n
        if mode == "tempfail":
            return "451 4.3.0 try again later"
        if mode == "reject":
            return "550 5.1.1 mailbox unavailable"
        if mode == "drop":
            # The client gets end of file instead of a reply; the lost
            # connection then cancels this handler.
            server.transport.close()
            await asyncio.Event().wait()
        if mode == "hang":
            # Never answers; cancelled when the client goes away.
            await asyncio.Event().wait()
        print(f"sink.py: unknown mode {mode!r} in {self.control}", file=sys.stderr, flush=True)
        return "451 4.3.0 sink: unknown mode"


class Connection(SMTP):
    """An SMTP session that the shutdown can find and close."""

    open = set()

    def connection_made(self, transport):
        Connection.open.add(self)
        super().connection_made(transport)

    def connection_lost(self, error):
        Connection.open.discard(self)
        super().connection_lost(error)


def authenticator_for(credentials):
    user, _, password = credentials.partition(":")
    expected = LoginPassword(user.encode("utf-8"), password.encode("utf-8"))

    def authenticate(server, session, envelope, mechanism, auth_data):
        ok = isinstance(auth_data, LoginPassword) and tuple(auth_data) == tuple(expected)
        return AuthResult(success=ok, handled=False, auth_data=auth_data)

    return authenticate


async def serve(args):
    loop = asyncio.get_running_loop()
    os.makedirs(args.maildir, exist_ok=True)
    sink = Sink(args.maildir, args.mode, args.control)
    options = dict(
        hostname="relais-smtp-sink",
        enable_SMTPUTF8=True,
        timeout=3600,
        loop=loop,
    )
    if args.auth is not None:
        options.update(
            auth_required=True,
            auth_require_tls=False,
            authenticator=authenticator_for(args.auth),
        )
    server = await loop.create_server(
        lambda: Connection(sink, **options), host="127.0.0.1", port=args.port
    )
    port = server.sockets[0].getsockname()[1]

    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if args.exit_on_stdin_eof:
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

        async def watch():
            while await reader.read(4096):
                pass
            stop.set()

        loop.create_task(watch())

    print(f"ready {port}", flush=True)
    await stop.wait()
    server.close()
    for conn in list(Connection.open):
        if conn.transport is not None:
            conn.transport.abort()
    await asyncio.sleep(0)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--maildir", required=True)
    parser.add_argument("--mode", choices=MODES, default="accept")
    parser.add_argument("--control", help="file whose content, if any, is the mode")
    parser.add_argument("--auth", metavar="USER:PASSWORD")
    parser.add_argument("--exit-on-stdin-eof", action="store_true")
    args = parser.parse_args()
    if args.auth is not None and ":" not in args.auth:
        parser.error("--auth takes USER:PASSWORD")
    # aiosmtpd warns, rightly, that AUTH without TLS is unsafe: on loopback
    # in a test, that is the point.
    warnings.filterwarnings("ignore", message="Requiring AUTH while not requiring TLS")
    logging.basicConfig(level=logging.ERROR, format="sink.py: %(name)s: %(message)s")
    asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
