"""No secret in any record (leviathan.redaction) and the login a job reads
(leviathan.tracking.credentials): masking, the credentials file's mode, the files a sweep writes."""

from __future__ import annotations

import os

import pytest

from leviathan.redaction import MASK, is_secret_key, redact, redact_text, strip_userinfo
from leviathan.tracking.credentials import (
    PASSWORD,
    USER,
    TrackingAuthError,
    read_credentials_file,
    use_credentials,
)


@pytest.mark.parametrize("key", ["hf_token", "HF_TOKEN", "trainer.hf_token", "db.password",
                                 "clientSecret", "MLFLOW_TRACKING_PASSWORD", "api_key",
                                 "wandb.api-key", "private_key", "passwd"])
def test_secret_keys(key):
    assert is_secret_key(key)


@pytest.mark.parametrize("key", ["tokens", "tokenizer", "data.tokenizer", "max_tokens",
                                 "plan.tokens_per_step", "trainer.tokens", "PWD",
                                 "tracking.credentials_file", "seed"])
def test_ordinary_keys_are_kept(key):
    assert not is_secret_key(key)


@pytest.mark.parametrize("key", ["plan.flops_per_token", "flops_per_token", "plan.budget_tokens",
                                 "plan.tokens_per_step", "grid.tokens_per_param"])
def test_the_platforms_measures_are_not_secret(key):
    """A measure whose name has `token` in it is not a secret (issue 34.1: the analysis reads
    plan.flops_per_token from MLflow for the compute matching)."""
    assert not is_secret_key(key)
    assert redact({key: 1.5e8}) == {key: 1.5e8}
    assert redact({key: "1.5e8"}) == {key: "1.5e8"}
    assert redact_text(f"{key}: 150000000.0") == f"{key}: 150000000.0"


def test_only_a_secret_keys_text_value_is_masked():
    """Masked: a secret key's value that is a string and not a number (as MLflow and Lightning
    mask only what is declared secret); a number under such a key is kept."""
    out = redact({"hf_token": "hf_CANARY", "db": {"password": "pw-CANARY", "port": 5432},
                  "api_key": 12345, "token_count": "2048", "max_token": None,
                  "secret_flag": True})
    assert out == {"hf_token": MASK, "db": {"password": MASK, "port": 5432}, "api_key": 12345,
                   "token_count": "2048", "max_token": None, "secret_flag": True}
    assert redact_text("HF_TOKEN=hf_CANARY token_count=2048") == "HF_TOKEN=*** token_count=2048"


def test_no_key_of_the_real_configs_is_masked(compose):
    """Masking must not eat a real setting: none of train's or sweep's keys is a secret one."""
    from omegaconf import OmegaConf

    from leviathan.training.config import flatten

    for name in ("train", "sweep"):
        keys = flatten(OmegaConf.to_container(compose(name), resolve=False))
        assert len(keys) > 50 and [k for k in keys if is_secret_key(k)] == []


@pytest.mark.parametrize("text, secret", [
    ("http://sweep:CANARY1234@login01:5000", "CANARY1234"),
    ("export HF_TOKEN=CANARY1234 && source .venv/bin/activate", "CANARY1234"),
    ("export HF_TOKEN='CANARY 1234'", "CANARY 1234"),
    ("+meta.hf_token=CANARY1234", "CANARY1234"),
    ("mlflow login --password CANARY1234 --user x", "CANARY1234"),
    ("--password=CANARY1234", "CANARY1234"),
    ("{'hf_token': 'CANARY1234', 'n': 1}", "CANARY1234"),
    ('MLFLOW_TRACKING_PASSWORD="CANARY1234"', "CANARY1234"),
])
def test_text_is_masked(text, secret):
    out = redact_text(text)
    assert secret not in out and MASK in out


def test_text_without_secrets_is_unchanged():
    for text in ("token budget 1024 tokens: 2048", "http://login01:5000/#/experiments/1",
                 "export PATH=/usr/bin", "tokenizer: o200k_base"):
        assert redact_text(text) == text


def test_config_is_masked_and_the_original_kept():
    cfg = {"tracking": {"uri": "http://u:CANARY1234@h:5000", "experiment": "leviathan"},
           "meta": {"hf_token": "CANARY5678", "sweep": "s"}, "trainer": {"tokens": 1024},
           "setup": ["export WANDB_API_KEY=CANARY9999", "module load cuda"]}
    out = redact(cfg)
    assert "CANARY" not in str(out)
    assert out["tracking"]["uri"] == "http://***@h:5000" and out["trainer"]["tokens"] == 1024
    assert out["setup"][1] == "module load cuda" and out["meta"]["sweep"] == "s"
    assert cfg["tracking"]["uri"] == "http://u:CANARY1234@h:5000"  # the job's copy is real
    assert strip_userinfo(out["tracking"]["uri"]) == "http://h:5000"


def test_registered_password_is_masked_in_any_text(monkeypatch):
    monkeypatch.setenv(PASSWORD, "s3cr3t-from-env")
    assert redact_text("login failed for s3cr3t-from-env!") == "login failed for ***!"


def _file(tmp_path, text, mode=0o600):
    p = tmp_path / "sweep.credentials"
    p.write_text(text)
    p.chmod(mode)
    return p


def test_credentials_file_is_read(tmp_path, monkeypatch):
    monkeypatch.delenv(USER, raising=False)
    monkeypatch.delenv(PASSWORD, raising=False)
    p = _file(tmp_path, "# sweep login\nusername=sweep\nexport password='pw-1234'\n")
    assert read_credentials_file(p) == {USER: "sweep", PASSWORD: "pw-1234"}
    uri = use_credentials("http://h:5000", str(p))
    assert uri == "http://h:5000" and os.environ[USER] == "sweep"
    assert os.environ[PASSWORD] == "pw-1234"


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_credentials_file_readable_by_others_is_refused(tmp_path, mode):
    p = _file(tmp_path, "username=a\npassword=b\n", mode)
    with pytest.raises(TrackingAuthError, match=r"tracking.credentials_file=.*chmod 600"):
        read_credentials_file(p)


def test_credentials_file_errors_name_the_key(tmp_path):
    with pytest.raises(TrackingAuthError, match="tracking.credentials_file=.*no such file"):
        read_credentials_file(tmp_path / "missing")
    with pytest.raises(TrackingAuthError, match="line 1"):
        read_credentials_file(_file(tmp_path, "pasword=x\n"))
    with pytest.raises(TrackingAuthError, match="no password="):
        read_credentials_file(_file(tmp_path, "username=x\n"))


def test_uri_userinfo_becomes_the_login(monkeypatch):
    monkeypatch.delenv(USER, raising=False)
    monkeypatch.delenv(PASSWORD, raising=False)
    assert use_credentials("http://sweep:p%40ss-1234@h:5000") == "http://h:5000"
    assert (os.environ[USER], os.environ[PASSWORD]) == ("sweep", "p@ss-1234")
    assert "p@ss-1234" not in redact_text("sent with p@ss-1234")
    # a record's masked URI carries no login: the environment's stays
    assert use_credentials("http://***@h:5000") == "http://h:5000"
    assert os.environ[USER] == "sweep"


def test_write_plan_masks_configs_manifest_and_plan(compose, tmp_path):
    """The files a sweep writes to sweeps/<sweep>/ (fit to commit) hold no secret; the plan's
    run configs, what the jobs receive, keep the real values."""
    from leviathan.sweep.plan import make_plan, write_plan

    overrides = ["+grid=smoke_tiny", "grid.sizes=[smoke_tiny/164K]", "~grid.arms.leviathan",
                 "grid.tokens=[1024]", "trainer.warmup_steps=1", f"paths.root_dir={tmp_path}",
                 "sweep.name=canary",
                 "tracking.uri=http://sweep:CANARY1@127.0.0.1:5000", "+meta.hf_token=CANARY2",
                 "launcher.setup=['export HF_TOKEN=CANARY3']"]
    cfg = compose("sweep", overrides)
    plan = make_plan(cfg, overrides, tmp_path)
    write_plan(plan, tmp_path / "sweeps" / "canary")
    written = {p: p.read_text() for p in (tmp_path / "sweeps" / "canary").rglob("*")
               if p.is_file()}
    assert {p.name for p in written} >= {"plan.csv", "manifest.json",
                                         f"{plan.runs[0].run}.yaml"}
    for path, text in written.items():
        assert "CANARY" not in text, path
    assert "http://***@127.0.0.1:5000" in written[tmp_path / "sweeps/canary/configs" /
                                                   f"{plan.runs[0].run}.yaml"]
    real = plan.runs[0].config
    assert real["tracking"]["uri"] == "http://sweep:CANARY1@127.0.0.1:5000"
    assert real["meta"]["hf_token"] == "CANARY2"


@pytest.mark.parametrize("host, flag, on", [("0.0.0.0", None, True), ("10.1.2.3", None, True),
                                             ("127.0.0.1", None, False), ("::1", None, False),
                                             ("127.0.0.1", True, True), ("0.0.0.0", False, False)])
def test_auth_is_on_beyond_loopback_unless_opted_out(host, flag, on):
    from leviathan.tracking.service import wants_auth

    assert wants_auth(host, flag) is on
