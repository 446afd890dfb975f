"""Demo submissions for Exercise 4: a correct answer written differently from the reference, a
partly correct one, and one with the classic misconceptions of the chapter.

The correct answer deliberately differs from the reference (``named_parameters`` with its
duplicate removal, ``torch.inference_mode`` and ``torch.split`` batches, the private
``_DropoutNd`` base class, NumPy statistics), so the demo shows a different correct
implementation getting full marks through nbgrader. Written answers are graded by hand: the
demo students write short ones, which score nothing automatically.
"""

_VALID_RATES = '''
def _valid_rates(rates):
    rates = list(rates)
    if not rates or len(set(rates)) != len(rates):
        raise ValueError(f"need distinct rates, got {rates}")
    for rate in rates:
        if isinstance(rate, bool) or not isinstance(rate, numbers.Real):
            raise TypeError(f"rate {rate!r} is not a number")
        if math.isnan(rate) or not 0 <= rate < 1:
            raise ValueError(f"rate {rate!r} is not in [0, 1)")
    return rates
'''

_COUNTS = _VALID_RATES + '''

def count_parameters_by_rate(build_model, rates):
    """named_parameters() skips a shared tensor after its first name."""
    result = {}
    for rate in _valid_rates(rates):
        model = build_model(rate)
        if not isinstance(model, torch.nn.Module):
            raise TypeError("build_model must return a torch.nn.Module")
        result[float(rate)] = int(sum(t.numel() for _, t in model.named_parameters()
                                      if t.requires_grad))
    return result
'''

# Counts every tensor the state_dict holds: BatchNorm's running statistics as well.
_COUNTS_BUFFERS = _VALID_RATES + '''

def count_parameters_by_rate(build_model, rates):
    result = {}
    for rate in _valid_rates(rates):
        model = build_model(rate)
        if not isinstance(model, torch.nn.Module):
            raise TypeError("build_model must return a torch.nn.Module")
        trainable = sum(t.numel() for t in model.parameters() if t.requires_grad)
        result[float(rate)] = int(trainable + sum(b.numel() for b in model.buffers()))
    return result
'''

_SCALE = '''
def inference_scale(p, inverted):
    if type(inverted) is not bool or isinstance(p, bool) or not isinstance(p, numbers.Real):
        raise TypeError("p must be a number and inverted a bool")
    if not (0 <= p < 1):
        raise ValueError(f"p = {p!r} is not in [0, 1)")
    return 1.0 if inverted else float(1 - p)
'''

# "At inference the weights are scaled by the dropout rate p."
_SCALE_P = _SCALE.replace("float(1 - p)", "float(p)")
assert _SCALE_P != _SCALE

_EVALUATE = '''
def evaluate_accuracy(model, x, y, batch_size=256):
    """inference_mode, torch.split batches, modes restored by name."""
    if type(batch_size) is not int or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if len(x) != len(y) or len(x) == 0:
        raise ValueError("x and y must hold the same, non-zero number of rows")
    saved = {name: m.training for name, m in model.named_modules()}
    model.eval()
    try:
        with torch.inference_mode():
            batches = torch.split(x, batch_size)
            predictions = torch.cat([model(batch).argmax(1) for batch in batches])
    finally:
        for name, m in model.named_modules():
            m.training = saved[name]
    return float((predictions == y).sum()) / len(y), predictions
'''

# Switches to eval mode and never switches back.
_EVALUATE_NO_RESTORE = '''
def evaluate_accuracy(model, x, y, batch_size=256):
    if type(batch_size) is not int or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if len(x) != len(y) or len(x) == 0:
        raise ValueError("x and y must hold the same, non-zero number of rows")
    model.eval()
    with torch.no_grad():
        predictions = torch.cat([model(x[i:i + batch_size]).argmax(1)
                                 for i in range(0, len(x), batch_size)])
    return (predictions == y).float().mean().item(), predictions
'''

_ENABLE = '''
def enable_mc_dropout(model):
    """Every torch.nn dropout layer derives from the private base class _DropoutNd."""
    if not isinstance(model, torch.nn.Module):
        raise TypeError("model must be a torch.nn.Module")
    kinds = (torch.nn.modules.dropout._DropoutNd, GaussianDropout)
    names = [name for name, m in model.named_modules() if isinstance(m, kinds)]
    if not names:
        raise ValueError("no dropout layer in this model")
    model.eval()
    for name in names:
        model.get_submodule(name).training = True
    return names
'''

# The common shortcut: model.train() puts BatchNorm in training mode too.
_ENABLE_TRAIN = '''
def enable_mc_dropout(model):
    if not isinstance(model, torch.nn.Module):
        raise TypeError("model must be a torch.nn.Module")
    names = [name for name, m in model.named_modules()
             if isinstance(m, (torch.nn.modules.dropout._DropoutNd, GaussianDropout))]
    if not names:
        raise ValueError("no dropout layer in this model")
    model.train()
    return names
'''

_VERDICT = '''
def paired_verdict(with_dropout, without_dropout, alpha=0.05):
    """NumPy statistics, SciPy's t quantile."""
    from scipy import stats

    d = np.asarray(with_dropout, dtype=float) - np.asarray(without_dropout, dtype=float) \\
        if len(with_dropout) == len(without_dropout) else None
    if d is None or d.size < 2 or not np.isfinite(d).all():
        raise ValueError("need two equally long lists of at least 2 finite scores")
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not (0 < alpha < 1):
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    mean, err = float(d.mean()), float(d.std(ddof=1) / np.sqrt(d.size))
    bar = float(stats.t.ppf(1 - alpha / 2, d.size - 1)) * err
    return mean, err, "helps" if mean > bar else "hurts" if mean < -bar else "inconclusive"
'''

# The population standard deviation (NumPy's default ddof=0).
_VERDICT_DDOF0 = _VERDICT.replace("d.std(ddof=1)", "d.std()")

_WRITTEN_A = "False: the count is 19,210 at every rate. Dropout switches off about half of the " \
             "256 hidden units in each step at p = 0.5, but no parameter disappears."
_WRITTEN_B = "The buggy loop leaves dropout on, so every run drops other units. MC dropout keeps " \
             "it on on purpose, with BatchNorm in eval mode."
_WRITTEN_C = "0.2 helped the wide net, 0.5 was inconclusive, every rate hurt the narrow one: the " \
             "best rate depends on the model and the data, so sweep it on validation data."

_WRITTEN = {"written_answer_a": _WRITTEN_A, "written_answer_b": _WRITTEN_B,
            "written_answer_c": _WRITTEN_C}

STUDENTS: dict[str, dict[str, str | None]] = {
    "gus_correct": {
        "count_parameters_by_rate": _COUNTS, "inference_scale": _SCALE,
        "evaluate_accuracy": _EVALUATE, "enable_mc_dropout": _ENABLE,
        "paired_verdict": _VERDICT, **_WRITTEN,
    },
    "hal_partial": {
        "count_parameters_by_rate": _COUNTS, "inference_scale": _SCALE,
        "evaluate_accuracy": _EVALUATE_NO_RESTORE, "enable_mc_dropout": _ENABLE,
        "paired_verdict": _VERDICT_DDOF0, **_WRITTEN,
    },
    "ivy_classic_bugs": {
        "count_parameters_by_rate": _COUNTS_BUFFERS, "inference_scale": _SCALE_P,
        "evaluate_accuracy": _EVALUATE, "enable_mc_dropout": _ENABLE_TRAIN,
        "paired_verdict": _VERDICT, **_WRITTEN,
    },
}

#: Test cells each demo student fails (checked without nbgrader by tests/test_checks_ex04.py).
FAILED_CELLS: dict[str, set[str]] = {
    "gus_correct": set(),
    # the model is left in eval mode; the population standard deviation
    "hal_partial": {"test_evaluate_visible", "test_evaluate_hidden", "test_verdict_visible",
                    "test_verdict_hidden"},
    # buffers counted (only the hidden BatchNorm model has any); scaled by p;
    # model.train() for Monte Carlo dropout
    "ivy_classic_bugs": {"test_counts_hidden", "test_scale_visible", "test_enable_visible",
                         "test_enable_hidden"},
}

#: Automatic points each demo student must get, out of 15 (the 6 written points are by hand).
EXPECTED: dict[str, float] = {
    "gus_correct": 15.0,
    "hal_partial": 8.0,  # loses evaluate_accuracy (1 + 3) and paired_verdict (1 + 2)
    "ivy_classic_bugs": 9.0,  # loses counts' hidden (2), scale's visible (1), enable (1 + 2)
}
