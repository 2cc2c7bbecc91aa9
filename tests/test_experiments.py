import torch

from kdlib import setups
from kdlib.data.text import CharTokenizer, load_tinyshakespeare
from kdlib.engine.probes import th_completion, th_prompts
from kdlib.runs.spec import plan


def test_th_prompts_end_in_th_and_keep_their_context():
    tok = CharTokenizer("abcdefghijklmnopqrstuvwxyz ")
    prompts = th_prompts(tok.encode("the cat with the hat"), tok, 6)
    assert [tok.decode(p) for p in prompts] == ["ttttth", "t with", "ith th"]


def test_th_completion_counts_greedy_next_characters():
    tok = CharTokenizer("aeht ")
    task = type("T", (), {})()
    task.extra = {"tokenizer": tok}
    task.test = type("W", (), {"tokens": tok.encode("the tht th"), "block_size": 4})()

    class AlwaysA(torch.nn.Module):  # predicts "a" after "th" ending in odd windows, "e" otherwise
        def forward(self, x):
            logits = torch.zeros(*x.shape, len(tok.chars))
            logits[..., tok.index["a"]] = 1.0
            logits[0, -1, tok.index["e"]] = 2.0
            return logits

    counts = th_completion(AlwaysA(), task, "cpu", batch_size=8)
    assert counts == {"tha_count": 2, "the_count": 1, "th_prompts": 3}


def test_adversarial_teacher_data_replaces_the_but_keeps_the_vocabulary(data_dir):
    clean = load_tinyshakespeare(data_dir, block_size=8, max_chars=5000)
    adv = load_tinyshakespeare(data_dir, block_size=8, max_chars=5000, replace=[["the", "tha"]])
    assert "the" in clean.extra["text"] and "the" not in adv.extra["text"]
    assert clean.extra["tokenizer"].chars == adv.extra["tokenizer"].chars and clean.num_classes == 65
    setup = setups.get("tinyshakespeare-adversarial", "smoke")
    teacher, student = plan(setup)[:2]
    # the default reading replaces the word "the" (kdlib.setups.readings: adversarial-replacement)
    assert teacher.train_dataset_kwargs["replace_words"] == [["the", "tha"]] and student.train_dataset_kwargs is None
    assert "replace" not in teacher.train_dataset_kwargs
    assert teacher.probes == ["th_completion"]


def test_temperature_and_featuremap_setups():
    t4 = plan(setups.get("tinyshakespeare-nanogpt-to-picogpt-t4", "smoke"))
    assert {s.temperature for s in t4 if s.condition in ("kd", "rcd")} == {4.0}
    assert {s.temperature for s in t4 if s.condition == "siddo"} == {1.0}
    fm = plan(setups.get("tinyshakespeare-nanogpt-featuremap-block5", "smoke"))
    assert fm[0].arch_kwargs["n_layer"] == 6
    kinds = {s.condition: s.objective.kind for s in fm[1:]}
    assert kinds == {"siddo": "ce", "kd": "feature", "rcd": "feature_rcd"}
