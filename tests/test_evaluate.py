"""predict / accuracy / robust_error on a model whose answers are known exactly."""
import pytest
import torch
from torch import nn

from sramsim import QuantizedModel, RandomBitErrors
from sramsim.nn.data import Dataset
from sramsim.nn.evaluation import accuracy, evaluate, predict, robust_error, robust_error_summary


def selector(n_in: int = 3) -> nn.Module:
    """Linear map with identity weights: the prediction is the argmax of the input features."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(n_in, n_in, bias=False))
    with torch.no_grad():
        model[1].weight.copy_(torch.eye(n_in))
    return model


def dataset() -> Dataset:
    x = torch.tensor([[1., 0, 0], [0, 1, 0], [0, 0, 1], [0, 1, 0], [1, 0, 0]]).reshape(5, 1, 1, 3)
    y = torch.tensor([0, 1, 2, 2, 1])
    return Dataset(x, y, 3, "toy")


@pytest.mark.parametrize("batch_size", [1, 2, 1000])
def test_predict_and_accuracy_exact(batch_size):
    model, ds = selector(), dataset()
    pred = predict(model, ds.x, batch_size=batch_size)
    assert pred.dtype == torch.int64 and pred.tolist() == [0, 1, 2, 1, 0]
    assert accuracy(model, ds, batch_size=batch_size) == pytest.approx(3 / 5)


def test_weights_are_swapped_in_without_touching_the_model():
    model, ds = selector(), dataset()
    reverse = {"1.weight": torch.eye(3).flip(0)}          # class k <- feature 2-k
    assert predict(model, ds.x, reverse).tolist() == [2, 1, 0, 1, 2]
    assert accuracy(model, ds, reverse) == pytest.approx(1 / 5)
    assert torch.equal(model[1].weight, torch.eye(3))


def test_eval_mode_used_and_restored():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Dropout(0.9), nn.Linear(3, 3))
    x = torch.randn(50, 1, 1, 3)
    model.train()
    a, b = predict(model, x), predict(model, x)
    assert torch.equal(a, b)                               # no dropout: eval mode
    assert model.training                                  # caller's mode restored


def test_evaluate_loss_and_empty():
    model, ds = selector(), dataset()
    out = evaluate(model, ds)
    logits = ds.x.reshape(5, 3)
    assert out["accuracy"] == pytest.approx(0.6)
    assert out["loss"] == pytest.approx(float(nn.functional.cross_entropy(logits, ds.y)), rel=1e-6)
    empty = Dataset(torch.zeros(0, 1, 1, 3), torch.zeros(0, dtype=torch.int64), 3, "empty")
    assert predict(model, empty.x).shape == (0,)
    with pytest.raises(ValueError, match="empty"):
        accuracy(model, empty)


def test_robust_error_averages_over_weight_sets():
    model, ds = selector(), dataset()
    sets = [{"1.weight": torch.eye(3)}, {"1.weight": torch.eye(3).flip(0)}]
    r = robust_error(model, ds, sets)
    assert r["n"] == 2
    assert r["clean_error"] == pytest.approx(0.4)
    assert r["robust_error"] == pytest.approx((0.4 + 0.8) / 2)
    assert r["robust_error_std"] == pytest.approx(torch.tensor([0.4, 0.8]).std().item())


def test_robust_error_with_bit_errors_is_worse_than_clean():
    torch.manual_seed(0)
    model = selector(8)
    x = torch.randn(400, 1, 1, 8)
    ds = Dataset(x, x.reshape(400, 8).argmax(1), 8, "argmax")
    qm = QuantizedModel(model, bits=8)
    source = RandomBitErrors(0.2, seed=1)
    r = robust_error(model, ds, (qm.perturbed(source) for _ in range(5)), clean=qm.clean_weights())
    assert r["clean_error"] == 0.0
    assert r["robust_error"] > 0.2 and r["n"] == 5


def test_robust_error_summary_is_the_one_rerr():
    """robust_error, fusion eval's clean_error / rerr_* fields and vuln's rerr_mean all come from it."""
    r = robust_error_summary(0.75, [0.5, 0.25, 0.75])
    assert r == {"clean_error": 0.25, "robust_error": pytest.approx(0.5),
                 "robust_error_std": pytest.approx(0.25), "n": 3}
    assert robust_error_summary(0.9, [0.6])["robust_error_std"] == 0.0
    with pytest.raises(ValueError):
        robust_error_summary(0.9, [])
    fusion_eval = pytest.importorskip("fusion.evaluation")
    assert fusion_eval._errors(0.75, [0.5, 0.25, 0.75], "_nf") == {
        "clean_error_nf": 0.25, "rerr_nf_mean": r["robust_error"], "rerr_nf_std": r["robust_error_std"]}
