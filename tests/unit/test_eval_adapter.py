"""LeviathanLM (lm-eval's LM API) against a direct computation with the model, both arms; the
eval config; offline switches and failure messages. No training here (test_eval_run.py
evaluates trained checkpoints end to end)."""

from __future__ import annotations

import math

import pytest
import torch

pytest.importorskip("lm_eval", reason="the eval extra (lm-eval) is not installed")

TEXTS = [
    ("The quick brown fox jumps over the", " lazy dog"),
    ("def f(x):\n    return", " x + 1"),
    ("", "An empty context is end-of-text."),
    ("Trailing space moves to the continuation ", "here"),
    ("Question: what follows?\nAnswer:\n", "this line"),
    ("A much longer context that goes on and on about scaling laws, generators, "
     "codebooks and B-splines, until the final", " word"),
]


def small_model(arm: str, head: str, seed: int = 0):
    from leviathan.models import build_model

    torch.manual_seed(seed)
    cfg = {"arm": arm, "head": head, "d_model": 32, "n_heads": 2, "n_layers": 2,
           "max_seq_len": 32, "lev": {"d_seed": 16, "n_modes": 2, "order": 2, "hidden": 16}}
    return build_model(cfg).eval()


@pytest.fixture(scope="module")
def encoding():
    from leviathan.data.tokenizer import get_encoding

    return get_encoding("o200k_base")


def requests(kind: str, args: list[tuple]):
    from lm_eval.api.instance import Instance

    return [Instance(request_type=kind, doc={}, arguments=a, idx=i) for i, a in enumerate(args)]


def direct_logprob(model, n_vocab: int, tokens: list[int], n_cont: int) -> tuple[float, bool]:
    """log p of the last n_cont tokens given the rest: one full forward, no batching."""
    idx = torch.tensor([tokens[:-1]])
    with torch.no_grad():
        logits = model(idx)[0, :, :n_vocab].double()  # (T, V)
    logp = torch.log_softmax(logits, -1)
    tgt = torch.tensor(tokens[1:])
    lp = logp[torch.arange(len(tgt)), tgt][-n_cont:]
    greedy = (logits.argmax(-1) == tgt)[-n_cont:]
    return float(lp.sum()), bool(greedy.all())


@pytest.mark.parametrize("arm,head", [("dense", "tied"), ("dense", "untied"),
                                      ("leviathan", "generator"), ("leviathan", "untied")])
def test_loglikelihood_equals_direct_computation(encoding, arm, head):
    from leviathan.eval.adapter import LeviathanLM

    model = small_model(arm, head)
    lm = LeviathanLM(model, encoding, batch_size=3)
    got = lm.loglikelihood(requests("loglikelihood", TEXTS))
    eot = encoding.eot_token
    for (ctx, cont), (lp, greedy) in zip(TEXTS, got, strict=True):
        if ctx == "":
            c, t = [eot], encoding.encode_ordinary(cont)
        else:
            stripped = ctx.rstrip()
            moved = ctx[len(stripped):] + cont
            c = encoding.encode_ordinary(stripped)
            t = encoding.encode_ordinary(stripped + moved)[len(c):]
        tokens = (c + t)[-(model.cfg.max_seq_len + 1):]  # the long one is cut from the left
        want, want_greedy = direct_logprob(model, encoding.n_vocab, tokens, len(t))
        assert lp == pytest.approx(want, rel=1e-5, abs=1e-4), (arm, head, ctx)
        assert greedy == want_greedy
        assert lp < 0


@pytest.mark.parametrize("arm,head", [("dense", "tied"), ("leviathan", "generator")])
def test_rolling_equals_direct_sum_over_windows(encoding, arm, head):
    from leviathan.eval.adapter import LeviathanLM

    model = small_model(arm, head, seed=1)
    short = "Scaling laws fit loss against parameters."
    long = " ".join(["matched pairs see the identical stream of batches"] * 12)  # > 32 tokens
    lm = LeviathanLM(model, encoding, batch_size=2)
    got = lm.loglikelihood_rolling(requests("loglikelihood_rolling", [(short,), (long,), ("",)]))
    eot, L = encoding.eot_token, model.cfg.max_seq_len
    # short text: one window, every token predicted from end-of-text onwards
    ids = encoding.encode_ordinary(short)
    want, _ = direct_logprob(model, encoding.n_vocab, [eot] + ids, len(ids))
    assert got[0] == pytest.approx(want, rel=1e-5, abs=1e-4)
    # long text: first window predicts ids[:L] from [eot] + ids[:L-1]; each later window
    # predicts the next ids with the L preceding tokens as context
    ids = encoding.encode_ordinary(long)
    assert len(ids) > 2 * L
    total, _ = direct_logprob(model, encoding.n_vocab, [eot] + ids[:L], L)
    done = L
    while done < len(ids):
        end = min(len(ids), done + L)
        lp, _ = direct_logprob(model, encoding.n_vocab, ids[end - L - 1:end], end - done)
        total += lp
        done = end
    assert got[1] == pytest.approx(total, rel=1e-5, abs=1e-3)
    assert got[2] == 0.0


def test_batching_and_order_do_not_change_scores(encoding):
    from leviathan.eval.adapter import LeviathanLM

    model = small_model("leviathan", "generator", seed=2)
    reqs = requests("loglikelihood", TEXTS)
    one = LeviathanLM(model, encoding, batch_size=1).loglikelihood(reqs)
    many = LeviathanLM(model, encoding, batch_size=5).loglikelihood(reqs[::-1])[::-1]
    for (a, ga), (b, gb) in zip(one, many, strict=True):
        assert a == pytest.approx(b, rel=1e-5, abs=1e-4)
        assert ga == gb


def test_generation_is_refused_with_a_clear_message(encoding):
    from leviathan.eval.adapter import LeviathanLM

    lm = LeviathanLM(small_model("dense", "tied"), encoding)
    with pytest.raises(NotImplementedError, match="generate_until"):
        lm.generate_until(requests("generate_until", [("Q:", {"until": ["\n"]})]))
    with pytest.raises(ValueError, match="max_length"):
        LeviathanLM(small_model("dense", "tied"), encoding, max_length=64)


def test_leviathan_eval_uses_the_materialised_table(encoding):
    from leviathan.eval.adapter import LeviathanLM

    model = small_model("leviathan", "generator")
    lm = LeviathanLM(model, encoding)
    lm.loglikelihood(requests("loglikelihood", TEXTS[:2]))
    table = model.embed._table
    assert table is not None and table.shape == (model.cfg.padded_vocab, model.cfg.d_model)
    lm.loglikelihood(requests("loglikelihood", TEXTS[2:]))
    assert model.embed._table is table  # computed once, reused


# ------------------------------------------------------------------ config
def test_eval_config_defaults_overrides_and_errors():
    from leviathan.cli.eval import site_config
    from leviathan.eval.config import EvalConfigError

    cfg = site_config()
    assert cfg.tasks == ["lambada_openai", "hellaswag", "piqa", "arc_easy", "arc_challenge",
                         "winogrande"]
    assert cfg.num_fewshot == 0 and cfg.limit is None
    quick = site_config(["eval.tasks=[piqa]", "limit=50", "device=cpu"])
    assert quick.tasks == ["piqa"] and quick.limit == 50
    assert quick.spec_key() != site_config(["tasks=[piqa]"]).spec_key()
    assert quick.spec_key().startswith("fewshot0-limit50-")
    for bad, key in (("limit=-3", "eval.limit"), ("tasks=[]", "eval.tasks"),
                     ("batch_size=0", "eval.batch_size"), ("precision=fp8", "eval.precision"),
                     ("device=tpu", "eval.device"), ("offline=maybe", "eval.offline")):
        with pytest.raises(EvalConfigError, match=key.replace(".", r"\.")):
            site_config([bad])
    with pytest.raises(EvalConfigError, match="unknown eval config key"):
        site_config(["taks=[piqa]"])


# ------------------------------------------------------------------ offline and failures
def test_offline_switch_reaches_already_imported_libraries(monkeypatch):
    import datasets.config
    import huggingface_hub.constants

    from leviathan.eval.tasks import configure_offline, set_offline

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE",
                        huggingface_hub.constants.HF_HUB_OFFLINE)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", datasets.config.HF_HUB_OFFLINE)
    assert configure_offline("auto") is True  # the environment decides; no probe
    assert huggingface_hub.constants.HF_HUB_OFFLINE is True
    assert datasets.config.HF_HUB_OFFLINE is True
    set_offline(False)
    assert datasets.config.HF_HUB_OFFLINE is False
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens: auto -> offline
    monkeypatch.delenv("HF_DATASETS_OFFLINE")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    assert configure_offline("auto", probe_timeout_s=1.0) is True


def test_missing_hub_dataset_message_names_dataset_and_fix(tmp_path, monkeypatch):
    """A task whose hub data is not cached: the message names task, dataset and how to get it."""
    from leviathan.eval.tasks import describe_failure, set_offline, task_manager

    (tmp_path / "absent.yaml").write_text(
        "task: absent_task\ndataset_path: leviathan-test/absent-dataset\ndataset_name: sub\n"
        "output_type: loglikelihood\ntest_split: test\ndoc_to_text: '{{a}}'\n"
        "doc_to_target: '{{b}}'\nmetric_list:\n  - metric: acc\n")
    import datasets.config
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    set_offline(True)
    tm = task_manager([str(tmp_path)], include_defaults=False)
    with pytest.raises(Exception) as err:
        tm.load(["absent_task"])
    msg = describe_failure(tm, "absent_task", err.value, offline=True)
    assert "'absent_task'" in msg and "leviathan-test/absent-dataset (config sub)" in msg
    assert "huggingface-cli download --repo-type dataset leviathan-test/absent-dataset" in msg
    assert "HF_HOME" in msg and "eval.include_path" in msg and "\n" not in msg
    unknown = describe_failure(tm, "no_such_task", KeyError(
        "Spec 'no_such_task' is not a registered task/group/tag name"), offline=True)
    assert "not a known task" in unknown


def test_demo_tasks_are_built_from_the_demo_corpus(tmp_path):
    import json

    from leviathan.data.minipile import topic_docs
    from leviathan.eval.tasks import write_demo_tasks

    names = write_demo_tasks(tmp_path, n=10)
    assert names == ["demo_lastword", "demo_choice", "demo_text"]
    corpus = " ".join(" ".join(d.split()) for d in topic_docs())
    for line in (tmp_path / "demo_lastword.jsonl").read_text().splitlines():
        text = json.loads(line)["text"]
        assert text in corpus and text.split(" ")[-1].isalpha()
    for line in (tmp_path / "demo_choice.jsonl").read_text().splitlines():
        doc = json.loads(line)
        assert len(doc["choices"]) == 4 and 0 <= doc["label"] < 4
        assert f"{doc['context']} {doc['choices'][doc['label']]}" in corpus
    assert math.isclose(len((tmp_path / "demo_text.jsonl").read_text().splitlines()), 10)
