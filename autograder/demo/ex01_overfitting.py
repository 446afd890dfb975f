"""Demo submissions for Exercise 1: correct, partly correct, raising, a deleted test, warnings."""

_SPLIT = '''
def train_val_split(n_samples, val_fraction, seed):
    """Split 0..n_samples-1 at random into (train_idx, val_idx)."""
    if not isinstance(n_samples, int) or isinstance(n_samples, bool):
        raise TypeError("n_samples must be an int")
    if not isinstance(val_fraction, (int, float)) or isinstance(val_fraction, bool):
        raise TypeError("val_fraction must be a number")
    if not (val_fraction > 0 and val_fraction < 1):
        raise ValueError(f"val_fraction={val_fraction} is not in (0, 1)")
    k = round(n_samples * val_fraction)
    if k < 1 or k > n_samples - 1:
        raise ValueError("both parts must be non-empty")
    rng = np.random.default_rng(seed)
    shuffled = rng.permutation(np.arange(n_samples))
    return shuffled[k:], shuffled[:k]
'''

_COUNT = '''
def count_trainable_parameters(model):
    """Number of trainable scalars in model."""
    if not isinstance(model, torch.nn.Module):
        raise TypeError("expected a torch.nn.Module")
    unique = {id(t): t for t in model.parameters()}
    return sum(t.numel() for t in unique.values() if t.requires_grad)
'''

_EARLY = '''
def early_stopping_epoch(val_losses, patience):
    """(best_epoch, stop_epoch) of early stopping with the given patience."""
    if type(patience) is not int:
        raise TypeError("patience must be an int")
    if patience < 1:
        raise ValueError("patience must be >= 1")
    values = np.asarray(val_losses, dtype=float)
    if values.size == 0 or not np.all(np.isfinite(values)):
        raise ValueError("need a non-empty history of finite losses")
    best, waited = 0, 0
    for epoch in range(1, values.size):
        if values[epoch] < values[best]:
            best, waited = epoch, 0
        else:
            waited += 1
            if waited == patience:
                return best, epoch
    return best, int(values.size - 1)
'''

_GAP = '''
def generalisation_gap(train_acc, val_acc):
    """Train minus validation accuracy at the best validation epoch."""
    train, val = np.asarray(train_acc, dtype=float), np.asarray(val_acc, dtype=float)
    if train.shape != val.shape or val.size == 0:
        raise ValueError("need two non-empty histories of the same length")
    epoch = int(np.argmax(val))
    return float(train[epoch] - val[epoch])
'''

_WRITTEN = """No. Training longer only makes the network fit the 200 images more tightly; the
chapter shows the validation loss going up again while the training loss falls. More data and
weight decay or dropout shrink the gap; I would check on a held-out test set over several seeds."""

# Partly correct: counts frozen parameters too, and treats an equal loss as an improvement.
_COUNT_ALL = '''
def count_trainable_parameters(model):
    return sum(t.numel() for t in model.parameters())
'''

_EARLY_TIES = '''
def early_stopping_epoch(val_losses, patience):
    best, stop = 0, len(val_losses) - 1
    for epoch in range(1, len(val_losses)):
        if val_losses[epoch] <= val_losses[best]:
            best = epoch
        elif epoch - best >= patience:
            stop = epoch
            break
    return best, stop
'''

# Raises: the first task is left as the stub, the third cell crashes when it runs.
_EARLY_CRASH = '''
helper = make_history_helper()  # a name that was never defined

def early_stopping_epoch(val_losses, patience):
    return helper(val_losses, patience)
'''

_WARN = "import warnings\nwarnings.warn('this helper is experimental', UserWarning)\n"

STUDENTS: dict[str, dict[str, str | None]] = {
    "ada_correct": {
        "train_val_split": _SPLIT,
        "count_trainable_parameters": _COUNT,
        "early_stopping_epoch": _EARLY,
        "generalisation_gap": _GAP,
        "written_answer": _WRITTEN,
    },
    "ben_partial": {
        "train_val_split": _SPLIT,
        "count_trainable_parameters": _COUNT_ALL,
        "early_stopping_epoch": _EARLY_TIES,
        "generalisation_gap": _GAP,
    },
    "cy_raises": {
        "count_trainable_parameters": _COUNT,
        "early_stopping_epoch": _EARLY_CRASH,
        "generalisation_gap": _GAP,
    },
    "dee_deleted_test": {
        "train_val_split": _SPLIT,
        "count_trainable_parameters": _COUNT,
        "early_stopping_epoch": _EARLY,
        "generalisation_gap": _GAP,
        "test_count_visible": None,
        "test_gap_hidden": None,
    },
    "eve_warnings": {
        "train_val_split": _WARN + _SPLIT.replace(
            "    rng = ", "    warnings.warn('a large validation set', RuntimeWarning)\n    rng = "
        ),
        "count_trainable_parameters": _COUNT,
        "early_stopping_epoch": _EARLY,
        "generalisation_gap": _GAP,
    },
}

#: Automatic points each demo student must get (out of 12; the written answer is graded by hand).
EXPECTED = {
    "ada_correct": 12.0,
    "ben_partial": 8.0,
    "cy_raises": 6.0,
    "dee_deleted_test": 12.0,
    "eve_warnings": 12.0,
}
