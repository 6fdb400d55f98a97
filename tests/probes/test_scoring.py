"""The model-facing scorers against hand computations on a tiny model built from a config."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from discrepancy.probes.evaluate import ScoreSettings, score_items, skill_table
from discrepancy.probes.scoring import continuation_logprobs, encode, generate
from discrepancy.probes.suite import Distractor, ProbeItem, Suite


def hand_logprob(model, tok, context: str, continuation: str) -> float:
    """Σ log p(token) of the continuation, one unpadded sequence, log-softmax written out as logit − logsumexp."""
    ctx, cont = encode(tok, context), encode(tok, continuation)
    ids = torch.tensor([ctx + cont])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].double()  # [T, V]
    total = 0.0
    for j, t in enumerate(cont):
        row = logits[len(ctx) + j - 1]
        total += float(row[t] - torch.logsumexp(row, 0))
    return total


def hand_greedy(model, tok, prompt: str, n: int) -> str:
    """Greedy decoding by repeated full forwards and argmax (no cache, no padding, no generate)."""
    ids = encode(tok, prompt)
    out = []
    with torch.no_grad():
        for _ in range(n):
            nxt = int(model(input_ids=torch.tensor([ids])).logits[0, -1].argmax())
            if nxt == tok.eos_token_id:
                break
            ids.append(nxt)
            out.append(nxt)
    return tok.decode(out, skip_special_tokens=True)


def test_logprob_equals_hand_computation(tiny_model, char_tok):
    contexts = ["3+4\n<answer>", "12+30=", "x", "hello world, how are"]
    conts = ["7", "42</answer>", "yz", " you"]
    got = continuation_logprobs(tiny_model, char_tok, contexts, conts, batch_size=3)  # batches of 3 and 1, padded
    for (s, n), c, t in zip(got, contexts, conts):
        assert n == len(encode(char_tok, t))
        assert s == pytest.approx(hand_logprob(tiny_model, char_tok, c, t), abs=1e-4)


def test_batched_greedy_equals_hand_greedy(tiny_model, char_tok):
    prompts = ["3+4\n", "a much longer prompt: 12+30\n", "7"]
    gens = generate(tiny_model, char_tok, prompts, max_new_tokens=12, batch_size=2, stop="")
    for (g,), p in zip(gens, prompts):
        assert g.text == hand_greedy(tiny_model, char_tok, p, 12)
        assert g.n_tokens == 12


def test_greedy_ignores_the_generation_defaults_a_model_ships(tiny_model, char_tok):
    """A model folder's ``generation_config.json`` may carry a repetition penalty or forced tokens; probes decode
    the model itself, so greedy output stays the hand argmax and the model's own config is left as it was."""
    from transformers import GenerationConfig

    own = tiny_model.generation_config
    shipped = GenerationConfig(repetition_penalty=50.0, no_repeat_ngram_size=1, suppress_tokens=[5, 6, 7],
                               eos_token_id=own.eos_token_id, pad_token_id=own.pad_token_id)
    tiny_model.generation_config = shipped
    try:
        prompts = ["3+4\n", "12+30\n"]
        gens = generate(tiny_model, char_tok, prompts, max_new_tokens=12, batch_size=2, stop="")
        for (g,), p in zip(gens, prompts):
            assert g.text == hand_greedy(tiny_model, char_tok, p, 12)
        assert tiny_model.generation_config is shipped
    finally:
        tiny_model.generation_config = own


def test_item_scores_by_hand(tiny_model, char_tok):
    items = (ProbeItem("a", "add", "3+4", "7", (Distractor("8", "numeric"), Distractor("70", "unit"))),
             ProbeItem("b", "add", "1+1", "2"),
             ProbeItem("c", "fmt", "2+2", "4", check="format"))
    suite = Suite("s", items)
    df = score_items(tiny_model, char_tok, suite, ScoreSettings(max_new_tokens=8, batch_size=2)).set_index("item_id")
    ctx = suite.prompt(items[0]) + suite.answer_lead
    gold, d8, d70 = (hand_logprob(tiny_model, char_tok, ctx, t) for t in ("7", "8", "70"))
    assert df.loc["a", "logprob"] == pytest.approx(gold, abs=1e-4)
    assert df.loc["a", "discrimination"] == float(gold > d8 and gold > d70 / 2)  # mean per token
    probs = np.exp([gold, d8, d70]) / np.exp([gold, d8, d70]).sum()
    assert df.loc["a", "confidence"] == pytest.approx(probs.max(), abs=1e-4)
    assert df.loc["a", "choice_correct"] == float(np.argmax(probs) == 0)
    assert math.isnan(df.loc["b", "discrimination"])
    # an untrained model never writes a well-formed answer
    assert df["exact_match"].tolist() == [0.0, 0.0, 0.0]
    table = skill_table(df.reset_index())
    em = table[(table.skill == "add") & (table.metric == "logprob")]["value"].item()
    assert em == pytest.approx(df.loc[["a", "b"], "logprob"].mean())
    assert set(table[table.skill == "add"].metric) >= {"exact_match", "logprob", "discrimination", "ece", "brier",
                                                       "reflective_per_1k"}


def test_pass_at_k_columns_from_sampling(tiny_model, char_tok):
    suite = Suite("s", (ProbeItem("a", "add", "3+4", "7"),))
    torch.manual_seed(0)
    df = score_items(tiny_model, char_tok, suite, ScoreSettings(max_new_tokens=4, samples=4, pass_k=(1, 4, 8)))
    assert df.loc[0, "pass@1"] == 0.0 and df.loc[0, "pass@4"] == 0.0  # random model: no correct sample
    assert math.isnan(df.loc[0, "pass@8"])  # k > samples is undefined
