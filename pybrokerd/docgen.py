"""Write docs/configuration.md from the options themselves, so the reference cannot drift:
`python -m pybrokerd.docgen > docs/configuration.md` (tests/test_docs.py checks it is current)."""

from pybrokerd.options import Options

HEAD = """# Configuration reference

Every option of `twistd -n pybrokerd`. Each is also a key of the `[pybrokerd]` section of an
INI `--config` file (or a TOML `[pybrokerd]` table); the command line wins over the file. An
ActiveMQ `activemq.xml` given to `--config` is translated into the same settings
(docs/admin.md, "ActiveMQ configuration"). Sizes take `1048576`, `512kb`, `64mb`, `1gb`.
Listen addresses are Twisted endpoint strings (`tcp:61613:interface=0.0.0.0`,
`ssl:61614:privateKey=key.pem:certKey=cert.pem`); `none` turns a listener off.

This file is generated from `pybrokerd/options.py` (`python -m pybrokerd.docgen`).

| option | default | what it does |
|---|---|---|
"""


def render() -> str:
    options = Options()
    rows = []
    for flag in options.optFlags:
        if flag[0] == "version":
            continue
        rows.append("| `--%s` | off | %s |" % (flag[0], _cell(flag[2])))
    for param in options.optParameters:
        default = param[2]
        shown = "none" if default is None else "`%s`" % (default,)
        rows.append("| `--%s` | %s | %s |" % (param[0], shown, _cell(param[3])))
    return HEAD + "\n".join(rows) + "\n"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


if __name__ == "__main__":
    print(render(), end="")
