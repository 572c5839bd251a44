#!/usr/bin/env python3
"""Smoke check of a running messages service over verified TLS; the Python twin of `npm run check` (lib/check.ts).

Standard library only (Python >= 3.10). The flags, steps, output lines and exit status of lib/check.ts; only the
library's own error text in a failure line differs (a certificate that does not verify: OpenSSL's verify error number
here, Node's name for it there).
    python3 test/test.py [-d|--domain localhost] [-p|--port 5000] [-c|--cert-path certs/localhost.crt]
"""
import argparse
import collections
import http.client
import json
import os
import re
import ssl
import sys
import urllib.error
import urllib.request

TIMEOUT_S = 5
MISSING = 'a' * 64
# SHA-256 of the UTF-8 bytes, as `printf foo | sha256sum` prints it.
FOO_DIGEST = '2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae'
BAR_DIGEST = 'fcde2b2edba56bf408601fb721fe9b5c338d10ee429ea04fae5511b68fbf8fb9'

# A step's lines: '<url> <passed>', as the seed's test.py prints them, or '<action> <url>: FAILED, <what went wrong>'.
Step = collections.namedtuple('Step', 'action method path body status expected passed')


def get(digest, status, expected, passed):
    return Step('GET', 'GET', f'/messages/{digest}', None, status, expected, passed)


def post(message, digest):
    body = json.dumps({'message': message}).encode()
    return Step(f'POST "{message}" to', 'POST', '/messages', body, 201, {'digest': digest}, 'POSTed successfully')


STEPS = [
    get(MISSING, 404, {'err_msg': f'Message not found for hash: {MISSING}'}, 'correctly not found'),
    post('foo', FOO_DIGEST),
    get(FOO_DIGEST, 200, {'message': 'foo'}, 'correctly found'),
    post('bar', BAR_DIGEST),
    get(BAR_DIGEST, 200, {'message': 'bar'}, 'correctly found'),
    get(FOO_DIGEST, 200, {'message': 'foo'}, 'correctly found'),
]


def show(body):
    """A received body, capped and with control characters escaped, so a failure stays one short line."""
    capped = body[:200] + '...' if len(body) > 200 else body
    return re.sub(r'[\x00-\x1f\x7f]', lambda m: f'\\u{ord(m.group()):04x}', capped) or '(empty body)'


def describe(err, domain, port):
    """Says which phase failed, like lib/check.ts: urllib wraps connect and TLS errors in URLError, not later ones."""
    wrapped = isinstance(err, urllib.error.URLError) and isinstance(err.reason, BaseException)
    cause = err.reason if wrapped else err
    if isinstance(cause, TimeoutError):
        return f'no complete response within {TIMEOUT_S} s'
    if isinstance(cause, ssl.SSLCertVerificationError):  # OpenSSL's words change between versions, its codes do not
        return f'TLS handshake with {domain} failed: {cause.verify_message} (verify error {cause.verify_code})'
    if isinstance(cause, ssl.SSLError):
        return f'TLS handshake with {domain} failed: {cause}'
    if wrapped:
        return f'could not connect to {domain}:{port}: {getattr(cause, "strerror", None) or cause}'
    return f'connection failed: {cause}'


def send(opener, url, step):
    headers = {} if step.body is None else {'Content-Type': 'application/json'}
    request = urllib.request.Request(url, data=step.body, headers=headers, method=step.method)
    try:
        with opener.open(request, timeout=TIMEOUT_S) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:  # a 4xx or 5xx still carries the reply
        with err:
            return err.code, err.read()


def mismatch(status, text, step):
    """The status and the whole JSON body must equal the expected ones; returns what differs, or None."""
    try:
        if status == step.status and json.loads(text) == step.expected:
            return None
    except ValueError:
        pass  # a body that is not JSON is a mismatch like any other
    expected = json.dumps(step.expected, separators=(',', ':'), ensure_ascii=False)  # the form JSON.stringify prints
    return f'expected {step.status} {expected}, received {status} {show(text)}'


def run_check(domain, port, cert_path):
    """Runs the steps in order, one line each, and stops at the first failure; True when all passed."""
    cert_path = os.path.abspath(cert_path)
    try:
        # Only this file is trusted; strict verification is Python 3.13's default, asked for explicitly before it.
        context = ssl.create_default_context(cafile=cert_path)
        context.verify_flags |= ssl.VERIFY_X509_STRICT
    except (OSError, ValueError) as err:
        print(f'FAILED, cannot use --cert-path {cert_path}: {err}')
        return False
    # An empty ProxyHandler: an https_proxy in the environment must not carry a check meant for this host.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context))
    host = f'[{domain}]' if ':' in domain else domain  # an IPv6 literal goes in brackets (RFC 3986 section 3.2.2)
    base = f'https://{host}:{port}'
    for step in STEPS:
        url = base + step.path
        try:
            status, raw = send(opener, url, step)
        except (OSError, http.client.HTTPException) as err:
            print(f'{step.action} {url}: FAILED, {describe(err, domain, port)}')
            return False
        failure = mismatch(status, raw.decode('utf-8', 'replace'), step)
        if failure is not None:
            print(f'{step.action} {url}: FAILED, {failure}')
            return False
        print(f'{url} {step.passed}')
    # The seed's closing banner, which operators grep for.
    print()
    print('*' * 75)
    print('All tests passed!')
    print('*' * 75)
    return True


def port_number(text):
    if not re.fullmatch(r'[0-9]+', text) or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f'it must be an integer >= 1 and <= 65535, received {text!r}')
    return int(text)


def main():
    parser = argparse.ArgumentParser(
        description='Checks a running service: GET an unknown digest (404), POST "foo" and "bar", GET them back.',
        epilog='TLS is verified (strictly) with --cert-path as the only trusted CA and --domain as the name the '
               'certificate must carry. A relative --cert-path resolves against the working directory. Each socket '
               'operation times out after 5 s. Exit status: 0 all passed, 1 a step failed, 2 bad usage.')
    parser.add_argument('-d', '--domain', default='localhost', help='default: %(default)s')
    parser.add_argument('-p', '--port', type=port_number, default=5000, help='default: %(default)s')
    parser.add_argument('-c', '--cert-path', default='certs/localhost.crt', help='default: %(default)s')
    args = parser.parse_args()
    sys.exit(0 if run_check(args.domain, args.port, args.cert_path) else 1)


if __name__ == '__main__':
    main()
