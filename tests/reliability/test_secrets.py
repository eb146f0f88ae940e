"""Nothing secret is checked in or copied into an image. (That docker-compose.yml takes every secret
from the environment as `${VAR:?}` is tests/test_compose.py's job.)"""

from __future__ import annotations

import re
import subprocess

from tests.factories import REPO

# Shapes of real credentials; a literal that matches one is a leak wherever it is.
LEAKS = {
    "private key": re.compile(r"-----BEGIN (?:[A-Z]+ )*PRIVATE KEY-----"),
    "AWS access key": re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    "GitHub token": re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36,}\b"),
    "Slack token": re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}"),
    "Tango user or agent token": re.compile(r"\btg[od]_[A-Za-z0-9_-]{30,}"),
    "password inside a URL": re.compile(r"\b[a-z][a-z0-9+]*://[^\s/:@'\"]+:(?!\$\{)([^\s@/'\"{}]+)@"),
}
# Documentation may show the shape of a URL with a stand-in password.
PLACEHOLDERS = {"pw", "pass", "password", "secret", "changeme", "xxx", "...", "<password>"}
# Outside tests (which sign up throwaway users), a password or secret is never a literal in code or
# config: `password = "hunter2"`, `SECRET_KEY: abc`, `ENV TANGO_SERVICE_TOKEN=...`.
ASSIGNED = re.compile(r"""(?ix)\b(?:password|passwd|secret|secret_key|api_key|service_token|access_token)
                          ["']?\s*[:=]\s*["']([^"'\s${}<>]{6,})["']""")
DOCKER_ENV = re.compile(r"(?im)^\s*(?:ENV|ARG)\s+\S*(?:PASSWORD|SECRET|TOKEN|KEY)\S*[ =]\s*\S+")
TEXT_SUFFIXES = {".py", ".md", ".json", ".toml", ".yaml", ".yml", ".txt", ".cfg", ".ini", ".sh", ".ts", ".tsx",
                 ".js", ".html", ".env", ".conf", ""}


def repo_files() -> list[str]:
    """Tracked files and new ones not ignored (what the next commit could add)."""
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout.split("\n")
    return [f for f in out if f and (REPO / f).is_file()]


def test_no_credentials_in_the_repository():
    files = repo_files()
    assert len(files) > 50 and "tango/settings.py" in files
    found = []
    for name in files:
        path = REPO / name
        if path.suffix not in TEXT_SUFFIXES and path.name != "Dockerfile" or path.stat().st_size > 2_000_000:
            continue
        text = path.read_text(errors="replace")
        for what, pattern in LEAKS.items():
            found += [f"{name}: {what}: {m.group(0)[:40]}" for m in pattern.finditer(text)
                      if not (m.groups() and m.group(1).lower() in PLACEHOLDERS)]
        if not name.startswith("tests/"):
            found += [f"{name}: literal secret: {m.group(0)[:60]}" for m in ASSIGNED.finditer(text)]
        if path.name == "Dockerfile":
            found += [f"{name}: secret baked into the image: {m.group(0).strip()[:60]}"
                      for m in DOCKER_ENV.finditer(text)]
    assert not found, "things that look like secrets:\n" + "\n".join(found)


def test_the_patterns_catch_what_they_are_for():
    """The scan above can fail: each pattern matches a sample leak."""
    # Built from pieces so that this file does not itself hold what it looks for.
    samples = {"private key": "-----BEGIN " + "OPENSSH PRIVATE KEY-----", "AWS access key": "AKIA" + "ABCDEFGHIJKLMNOP",
               "GitHub token": "ghp_" + "a1" * 18, "Slack token": "xoxb" + "-1234567890-abc",
               "Tango user or agent token": "tgd_" + "Zx9_" * 9,
               "password inside a URL": "postgresql://tango:" + "hunter22@db:5432/tango"}
    for what, sample in samples.items():
        assert LEAKS[what].search(sample), what
    assert not LEAKS["password inside a URL"].search("postgresql://tango:${POSTGRES_PASSWORD:?set it}@db/tango")
    assert LEAKS["password inside a URL"].search("postgresql+psycopg://user:" + "pw@host/db").group(1) in PLACEHOLDERS
    assert ASSIGNED.search('password = "hunter22"') and ASSIGNED.search("SECRET_KEY: 'abcdef123'")
    assert not ASSIGNED.search('password: "${POSTGRES_PASSWORD:?x}"')
    assert DOCKER_ENV.search("ENV TANGO_SERVICE_TOKEN=abc")


def test_images_do_not_get_local_secrets():
    ignored = {line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()}
    assert {".env", ".env.*", ".tango", ".git"} <= ignored
