"""make setup's translation of pip's index settings for uv (launch/uv_env.py)."""

from launch.uv_env import uv_settings

LISTED = """global.cert='/etc/ssl/certs/ca.crt'
global.constraint='/etc/pip/constraints.txt'
global.extra-index-url='file:///opt/a/simple file:///opt/b/simple'
global.find-links='/opt/from-file'
:env:.find-links='/opt/wheels /opt/more'
:env:.default-timeout='180'
"""


def test_pip_settings_become_uv_variables_env_over_file():
    got = uv_settings(LISTED)
    assert got == {
        "UV_INDEX_STRATEGY": "unsafe-best-match",
        "SSL_CERT_FILE": "/etc/ssl/certs/ca.crt",
        "UV_CONSTRAINT": "/etc/pip/constraints.txt",
        "UV_EXTRA_INDEX_URL": "file:///opt/a/simple file:///opt/b/simple",
        # PIP_FIND_LINKS (the :env: scope) wins over the file's value; uv wants commas
        "UV_FIND_LINKS": "/opt/wheels,/opt/more",
    }


def test_env_scope_wins_whatever_the_order_and_unknown_keys_are_dropped():
    reordered = ":env:.index-url='https://mirror/simple'\nglobal.index-url='https://pypi.org/simple'\n"
    assert uv_settings(reordered)["UV_DEFAULT_INDEX"] == "https://mirror/simple"
    assert uv_settings("global.timeout='60'\n") == {"UV_INDEX_STRATEGY": "unsafe-best-match"}
