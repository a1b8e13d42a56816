# Negative control: with one augmenter shared across epochs (the old behaviour), resume must differ.
import pytest
from fmnist import inputs
import test_resume


@pytest.fixture(autouse=True)
def shared_augmenter(monkeypatch):
    made = {}
    real = inputs.augmenter
    monkeypatch.setattr(inputs, "augmenter", lambda p, seed: made.setdefault("a", real(p, 1)))


params = test_resume.params
test_neg = test_resume.test_an_interrupted_run_resumes_to_the_same_weights
