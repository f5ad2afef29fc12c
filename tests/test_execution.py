"""Branch execution strategies: `loop`, `fused` and `auto` compute the same function, with the same gradients,
from the same state dict. (Their speed is measured by `make bench`, never here.)"""

import pytest
import torch

from paraformer.core.config import ConfigError
from paraformer.core.execution import STRATEGIES, AutoChoice, loop_cls
from paraformer.core.model import ParaFormer
from tests.test_model import small


def twins(name: str, **fields) -> dict[str, ParaFormer]:
    """One model per strategy, all holding the same weights (with LayerNorms away from their (1, 0) init, so that
    folding them into the projections is really tested)."""
    torch.manual_seed(0)
    base = ParaFormer(small(name, **fields))
    with torch.no_grad():
        for p in base.parameters():
            if p.dim() == 1:
                p.add_(0.1 * torch.randn_like(p))
    models = {}
    for strategy in STRATEGIES:
        models[strategy] = ParaFormer(base.config, execution=strategy)
        models[strategy].load_state_dict(base.state_dict())
    return models


@pytest.mark.parametrize("name", ["1-1", "1-4", "2-6", "3-6", "4-4"])
@pytest.mark.parametrize("batch", [1, 5])
def test_every_strategy_gives_the_same_outputs_and_gradients(name, batch):
    models = twins(name)
    x = torch.randn(batch, 3, 16, 16)
    outputs, grads = {}, {}
    for strategy, model in models.items():
        out = model(x)
        out.logsumexp(1).sum().backward()
        outputs[strategy] = out.detach()
        grads[strategy] = {n: p.grad for n, p in model.named_parameters()}
    for strategy in ("fused", "auto"):
        torch.testing.assert_close(outputs[strategy], outputs["loop"], rtol=1e-4, atol=1e-5)
        for param, grad in grads["loop"].items():
            torch.testing.assert_close(grads[strategy][param], grad, rtol=1e-4, atol=1e-5, msg=param)


def test_prefixes_agree_across_strategies_in_inference():
    models = twins("1-6")
    x = torch.randn(4, 3, 16, 16)
    with torch.inference_mode():
        expected = [p for p in models["loop"].eval().prefix_logits(x)]
        for strategy in ("fused", "auto"):
            got = models[strategy].eval().prefix_logits(x)
            for k in range(6):
                torch.testing.assert_close(got[k], expected[k], rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(models[strategy](x, num_branches=3), models["loop"](x, num_branches=3),
                                       rtol=1e-4, atol=1e-5)


def test_the_state_dict_does_not_depend_on_the_strategy():
    models = twins("2-6")
    states = [model.state_dict() for model in models.values()]
    assert all(list(s) == list(states[0]) for s in states)
    assert all(torch.equal(s[k], states[0][k]) for s in states for k in s)


def test_fused_inference_sees_weights_changed_after_an_earlier_call():
    models = twins("1-4")
    fused, loop = models["fused"].eval(), models["loop"].eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        fused(x)  # caches the stacked weights
        for model in (fused, loop):
            model.branches[2][0].mlp.fc1.weight.mul_(1.5)
            model.branches[1][0].norm1.bias.add_(0.3)
        torch.testing.assert_close(fused(x), loop(x), rtol=1e-4, atol=1e-5)


def test_auto_does_not_change_the_dropout_masks_it_trains_with():
    models = twins("1-4", dropout=0.2)
    x = torch.randn(3, 3, 16, 16)
    torch.manual_seed(7)
    auto = models["auto"].train()(x)
    chosen = next(iter(models["auto"].auto_choices.values()))
    torch.manual_seed(7)
    torch.testing.assert_close(auto, models[chosen].train()(x), rtol=1e-4, atol=1e-5)


def test_auto_picks_fused_only_when_it_is_clearly_faster_and_measures_each_shape_once(monkeypatch):
    measured = []
    timings = {3: (1.0, 0.99), 4: (1.0, 0.80)}  # batch -> (loop, fused) median seconds

    def fake_measure(self, run, branches, tokens):
        measured.append(tokens.shape[0])
        return timings[tokens.shape[0]]

    monkeypatch.setattr(AutoChoice, "measure", fake_measure)
    model = twins("2-4")["auto"].eval()
    with torch.no_grad():
        for batch in (3, 4, 3, 4):
            model(torch.randn(batch, 3, 16, 16))
    assert measured == [3, 4]
    assert sorted(model.auto_choices.values()) == ["fused", "loop"]  # 1% faster is within the margin: loop


def test_auto_measures_both_strategies_forward_and_backward():
    model = twins("2-4")["auto"]
    tokens = model.embed(torch.randn(2, 3, 16, 16))
    passes = []  # (strategy, "forward" or "backward"), in the order they ran

    def counted(name, run):
        def counting(branches, tokens):
            passes.append((name, "forward"))
            out = run(branches, tokens)
            first = out[0] if isinstance(out, list) else out
            if first.requires_grad:
                first.register_hook(lambda grad: passes.append((name, "backward")))
            return out
        return counting

    run = {"loop": counted("loop", loop_cls), "fused": counted("fused", model._fused)}
    rounds = model._auto.repeats + 2  # two of them warm up
    model._auto.measure(run, model.branches, tokens)
    assert passes.count(("loop", "backward")) == passes.count(("fused", "backward")) == rounds
    assert passes.count(("loop", "forward")) == passes.count(("fused", "forward")) == rounds
    assert all(p.grad is None for p in model.parameters())  # timing the backward leaves no gradients behind
    passes.clear()
    with torch.no_grad():  # inference shapes are timed forward only
        model._auto.measure(run, model.branches, tokens.detach())
    assert sorted(set(passes)) == [("fused", "forward"), ("loop", "forward")] and len(passes) == 2 * rounds


def test_class_incremental_models_run_fused():
    torch.manual_seed(0)
    model = ParaFormer(small("1-2")).expand(2, 3)
    fused = ParaFormer(model.config, execution="fused")
    fused.load_state_dict(model.state_dict())
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(fused(x), model(x), rtol=1e-4, atol=1e-5)


def test_an_unknown_strategy_is_refused_with_the_choices():
    with pytest.raises(ConfigError, match="'threads' is unknown; choose one of \\('loop', 'fused', 'auto'\\)"):
        ParaFormer(small("1-2"), execution="threads")
