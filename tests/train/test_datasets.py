"""The training data layer on the real bundled datasets and on small user files written here."""
from __future__ import annotations

import json
from collections import Counter
from contextlib import contextmanager

import numpy as np
import pytest

from kd2mcu.errors import UserError
from kd2mcu.train.datasets import BUNDLED, encode_text, load_task, normalize

aeon_datasets = pytest.importorskip("aeon.datasets")


@pytest.fixture(scope="module")
def motions():
    return load_task("basic_motions")


@pytest.fixture(scope="module")
def vowels():
    return load_task("japanese_vowels")


@pytest.fixture(scope="module")
def reviews():
    return load_task("chinese_reviews", subset=3000)


@contextmanager
def user_error(match: str):
    """pytest.raises for a UserError whose message matches and is one line."""
    with pytest.raises(UserError, match=match) as info:
        yield info
    assert "\n" not in str(info.value), str(info.value)


def assert_padding_zero(x: np.ndarray, lengths: np.ndarray) -> None:
    for row, n in zip(x, lengths):
        assert not row[n:].any()


def assert_same(a, b) -> None:
    for field in ("x_train", "y_train", "len_train", "x_val", "y_val", "len_val", "x_test", "y_test", "len_test"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field), err_msg=field)
    assert a.to_json() == b.to_json()
    assert (a.texts_train, a.texts_val, a.texts_test) == (b.texts_train, b.texts_val, b.texts_test)


# ---- bundled datasets ------------------------------------------------------------------------------

def test_default_is_basic_motions_with_its_own_split(motions):
    d = motions
    assert load_task().to_json() == d.to_json()
    assert (d.name, d.kind, d.num_features, d.max_len, d.num_classes) == ("basic_motions", "sequence", 6, 100, 4)
    assert d.classes == ["badminton", "running", "standing", "walking"]
    assert len(d.y_train) + len(d.y_val) == 40 and len(d.y_test) == 40
    assert len(d.y_val) == 6  # 15% of 40, stratified: every class in train and in val
    assert set(d.y_train) == set(d.y_val) == set(d.y_test) == {0, 1, 2, 3}
    assert d.x_train.dtype == np.float32 and d.y_train.dtype == np.int64 and d.len_train.dtype == np.int64
    assert (d.len_train == 100).all() and (d.len_test == 100).all()
    assert d.vocab is None and d.texts_train is None
    assert json.loads(json.dumps(d.to_json()))["splits"] == {"train": 34, "val": 6, "test": 40}


def test_japanese_vowels_unequal_lengths(vowels):
    d = vowels
    assert (d.kind, d.num_features, d.num_classes, d.max_len) == ("sequence", 12, 9, 29)
    assert d.classes == [str(k) for k in range(1, 10)]
    assert len(d.y_train) + len(d.y_val) == 270 and len(d.y_test) == 370
    lengths = np.concatenate([d.len_train, d.len_val, d.len_test])
    assert lengths.min() == 7 and lengths.max() == 29
    for x, n in ((d.x_train, d.len_train), (d.x_val, d.len_val), (d.x_test, d.len_test)):
        assert_padding_zero(x, n)
        assert all(np.abs(row[k - 1]).sum() > 0 for row, k in zip(x, n))  # the last valid step is data


def test_chinese_reviews(reviews):
    d = reviews
    assert (d.kind, d.classes, d.num_features, d.max_len) == ("text", ["negative", "positive"], None, 64)
    assert d.vocab[:2] == ["<pad>", "<oov>"] and len(d.vocab) <= 2000 and len(set(d.vocab)) == len(d.vocab)
    assert len(d.y_train) + len(d.y_val) + len(d.y_test) == 3000 and len(d.y_test) == 600
    assert 0.3 < d.y_train.mean() < 0.7 and abs(d.y_test.mean() - d.y_train.mean()) < 0.02
    for x, n, texts in ((d.x_train, d.len_train, d.texts_train), (d.x_val, d.len_val, d.texts_val),
                        (d.x_test, d.len_test, d.texts_test)):
        assert x.dtype == np.int64 and x.min() >= 0 and x.max() < len(d.vocab)
        assert n.min() >= 1 and (n == [min(len(t), 64) for t in texts]).all()
        assert (x[np.arange(64)[None, :] < n[:, None]] > 0).all()  # no padding id inside a text
        assert_padding_zero(x, n)
    assert not set(d.texts_train) & set(d.texts_test)
    assert not set(d.texts_val) & (set(d.texts_train) | set(d.texts_test))
    text, ids = d.texts_train[0], d.x_train[0]
    assert [d.vocab[i] for i in ids[:len(text)] if i > 1] == [c for c in text[:64] if c in d.vocab[2:]]


def test_chinese_reviews_loads_whole():
    d = load_task("chinese_reviews")
    total = len(d.y_train) + len(d.y_val) + len(d.y_test)
    assert total > 15000 and len(d.vocab) == 2000
    assert len(set(d.texts_train + d.texts_val + d.texts_test)) == total


def test_vocab_order_cap_and_oov():
    d = load_task("chinese_reviews", subset=400, max_vocab=50, max_len=32)
    assert len(d.vocab) == 50 and d.x_train.shape[1] == 32
    counts = Counter("".join(t[:32] for t in d.texts_train))
    ranked = [counts[c] for c in d.vocab[2:]]
    assert ranked == sorted(ranked, reverse=True) and min(ranked) >= max(counts[c] for c in counts
                                                                          if c not in d.vocab)
    unseen = next(c for c in "☃龘𠀀" if c not in counts)
    ids, lengths = encode_text([d.vocab[2] + unseen, d.vocab[3] * 40], d.vocab, 32)
    assert ids[0, :3].tolist() == [2, 1, 0] and lengths.tolist() == [2, 32] and (ids[1] == 3).all()
    with user_error("text 0 is empty"):
        encode_text([""], d.vocab, 32)


# ---- normalization, determinism --------------------------------------------------------------------

def test_normalization_is_fitted_on_the_train_split_only(vowels):
    d = vowels
    valid = d.x_train[np.arange(d.max_len)[None, :] < d.len_train[:, None]]
    np.testing.assert_allclose(valid.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(valid.std(axis=0), 1, atol=1e-4)
    val_valid = d.x_val[np.arange(d.max_len)[None, :] < d.len_val[:, None]]
    assert np.abs(val_valid.mean(axis=0)).max() > 1e-3  # not re-fitted on the validation split


def test_stored_normalization_matches_the_raw_training_data():
    d = load_task("japanese_vowels", val_fraction=0)
    assert d.x_val.shape == (0, 29, 12) and d.y_val.shape == (0,) and d.len_val.shape == (0,)
    raw_train, _ = aeon_datasets.load_japanese_vowels(split="train")
    steps = np.concatenate([np.asarray(s).T for s in raw_train])
    np.testing.assert_allclose(d.normalization["mean"], steps.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(d.normalization["std"], steps.std(axis=0), rtol=1e-12)
    raw_test, _ = aeon_datasets.load_japanese_vowels(split="test")
    first = np.asarray(raw_test[0]).T  # [T, 12]
    padded = np.zeros((1, 29, 12))
    padded[0, :len(first)] = first
    np.testing.assert_array_equal(normalize(padded, d.len_test[:1], d.normalization), d.x_test[:1])


def test_same_seed_same_arrays_other_seed_other_validation():
    a, b = load_task("japanese_vowels", seed=3), load_task("japanese_vowels", seed=3)
    assert_same(a, b)
    c = load_task("japanese_vowels", seed=4)
    assert not np.array_equal(a.x_val, c.x_val)
    assert set(np.bincount(a.y_val)) == set(np.bincount(c.y_val)) == {4, 5}  # 41 of 9 x 30, stratified
    t1, t2 = load_task("chinese_reviews", subset=500, seed=1), load_task("chinese_reviews", subset=500, seed=1)
    assert_same(t1, t2)
    t3 = load_task("chinese_reviews", subset=500, seed=2)
    assert t3.texts_test == t1.texts_test and t3.texts_val != t1.texts_val  # the test split ignores the seed



def test_folds_hold_out_every_training_sample_exactly_once():
    whole = load_task("arrow_head", val_fraction=0)
    folds = [load_task("arrow_head", seed=2, folds=5, fold=k) for k in range(5)]
    held = np.concatenate([f.index_val for f in folds])
    assert sorted(held.tolist()) == sorted(whole.index_train.tolist())  # a partition of the training split
    for f in folds:
        assert len(f.y_val) in (7, 8) and not set(f.index_val) & set(f.index_train)
        assert len(f.y_train) + len(f.y_val) == len(whole.y_train)
        np.testing.assert_array_equal(np.sort(f.index_val), f.index_val)  # source order kept
        assert set(np.bincount(f.y_val, minlength=3)) <= {2, 3}  # 36 samples of 3 classes (12 each): stratified
        np.testing.assert_array_equal(f.y_test, whole.y_test)
    again = load_task("arrow_head", seed=2, folds=5, fold=3)
    assert_same(again, folds[3])
    other = load_task("arrow_head", seed=3, folds=5, fold=3)
    assert not np.array_equal(other.index_val, folds[3].index_val)  # the seed deals the folds
    with user_error(r"\[data\] folds = 5, fold = 5: folds must be 0 \(no cross-validation\) or at least 2"):
        load_task("arrow_head", folds=5, fold=5)
    with user_error(r"folds = 1, fold = 0"):
        load_task("arrow_head", folds=1)
    with user_error(r"the training split has only 36 sample\(s\), fewer than \[data\] folds = 37; give fewer folds"):
        load_task("arrow_head", folds=37)


def test_nested_folds_score_the_held_out_fold_as_test_and_validate_on_the_others():
    whole = load_task("arrow_head", val_fraction=0)
    plain = [load_task("arrow_head", seed=2, folds=5, fold=k) for k in range(5)]
    nested = [load_task("arrow_head", seed=2, folds=5, fold=k, fold_split="test") for k in range(5)]
    for p, n in zip(plain, nested):
        np.testing.assert_array_equal(n.index_test, p.index_val)  # the same fold, now the test split
        np.testing.assert_array_equal(n.y_test, p.y_val)
        assert len(n.y_val) == 4  # 15% of the other 28-29 samples
        assert not set(n.index_val) & set(n.index_train)
        assert sorted(np.concatenate([n.index_train, n.index_val]).tolist()) == sorted(p.index_train.tolist())
    assert sum(len(n.y_test) for n in nested) == len(whole.y_train)  # the dataset's own test split is not loaded
    assert_same(load_task("arrow_head", seed=2, folds=5, fold=1, fold_split="test"), nested[1])
    with user_error(r"\[data\] fold_split = 'train': must be validation or test"):
        load_task("arrow_head", folds=5, fold_split="train")

# ---- user files ------------------------------------------------------------------------------------

def write_csv(path, text: str):
    path.write_text(text.strip() + "\n", encoding="utf-8")
    return path


def test_npz_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 5, 3)).astype(np.float32)
    lengths = np.array([5, 2, 4, 5, 3, 1])
    y = np.array([0, 1, 0, 1, 0, 1])
    np.savez(tmp_path / "train.npz", x=x, y=y, lengths=lengths)
    np.savez(tmp_path / "test.npz", x=x[:2], y=np.array([1, 0]))  # (a class only in test is refused: test_frames)
    d = load_task(data=tmp_path / "train.npz", test=tmp_path / "test.npz", val_fraction=0)
    assert (d.name, d.kind, d.classes) == ("train.npz", "sequence", ["0", "1"])
    np.testing.assert_array_equal(d.y_train, y)
    np.testing.assert_array_equal(d.len_train, lengths)
    np.testing.assert_array_equal(d.len_test, [5, 5])
    valid = x[np.arange(5)[None, :] < lengths[:, None]].astype(np.float64)
    np.testing.assert_allclose(d.normalization["mean"], valid.mean(axis=0), rtol=1e-12)
    np.testing.assert_array_equal(d.x_train, normalize(x, lengths, d.normalization))
    np.testing.assert_array_equal(d.x_test, normalize(x[:2], [5, 5], d.normalization))
    assert_padding_zero(d.x_train, d.len_train)


def test_token_npz_keeps_ids_and_finds_lengths(tmp_path):
    x = np.array([[5, 3, 0, 0], [7, 0, 2, 0], [1, 1, 1, 1], [4, 0, 0, 0], [6, 6, 0, 0]])
    np.savez(tmp_path / "tok.npz", x=x, y=np.array([0, 1, 0, 1, 1]))
    np.savez(tmp_path / "tok_test.npz", x=x[:2, :3], y=np.array([1, 0]))
    d = load_task(data=tmp_path / "tok.npz", test=tmp_path / "tok_test.npz", val_fraction=0)
    assert (d.kind, d.normalization, d.texts_train, d.max_len) == ("text", None, None, 4)
    assert d.vocab == ["<pad>", "<1>", "<2>", "<3>", "<4>", "<5>", "<6>", "<7>"]
    np.testing.assert_array_equal(d.x_train, x)
    np.testing.assert_array_equal(d.len_train, [2, 3, 4, 1, 2])
    np.testing.assert_array_equal(d.x_test, [[5, 3, 0, 0], [7, 0, 2, 0]])
    with user_error(r"--data .*tok.npz: token id 7 needs a vocabulary of 8 entries, above --max-vocab 5"):
        load_task(data=tmp_path / "tok.npz", max_vocab=5)


def test_unequal_length_csv_round_trip(tmp_path):
    train = write_csv(tmp_path / "train.csv", """
sample,label,step,a,b
s1,0,1,1.5,2.0
s2,1,0,-1.0,0.25
s1,0,0,0.5,4.0
s3,1,0,3.0,-2.0
s1,0,2,2.5,6.0
s3,1,1,1.0,0.0
""")
    test = write_csv(tmp_path / "test.csv", "sample,label,a,b,step\nq,1,7.0,8.0,0\n")
    d = load_task(data=train, test=test, val_fraction=0)
    raw = np.zeros((3, 3, 2))
    raw[0] = [[0.5, 4.0], [1.5, 2.0], [2.5, 6.0]]
    raw[1, 0] = [-1.0, 0.25]
    raw[2, :2] = [[3.0, -2.0], [1.0, 0.0]]
    lengths = np.array([3, 1, 2])
    assert (d.kind, d.classes, d.num_features, d.max_len) == ("sequence", ["0", "1"], 2, 3)
    np.testing.assert_array_equal(d.y_train, [0, 1, 1])
    np.testing.assert_array_equal(d.len_train, lengths)
    valid = raw[np.arange(3)[None, :] < lengths[:, None]]
    np.testing.assert_allclose(d.normalization["mean"], valid.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(d.normalization["std"], valid.std(axis=0), rtol=1e-12)
    np.testing.assert_array_equal(d.x_train, normalize(raw, lengths, d.normalization))
    np.testing.assert_array_equal(d.x_test, normalize(np.array([[[7.0, 8.0], [0, 0], [0, 0]]]), [1],
                                                      d.normalization))
    cut = load_task(data=train, test=test, val_fraction=0, max_len=2)
    np.testing.assert_array_equal(cut.len_train, [2, 1, 2])


def test_lone_data_file_gets_a_fixed_stratified_test_split(tmp_path):
    rows = ["sample,label,v"] + [f"n{k},{k % 2},{k}" for k in range(20)]
    data = write_csv(tmp_path / "all.csv", "\n".join(rows))
    a = load_task(data=data, seed=0)
    b = load_task(data=data, seed=5)
    assert len(a.y_test) == 4 and np.bincount(a.y_test).tolist() == [2, 2]
    raw = lambda d, x: set(np.round(x[:, 0, 0] * d.normalization["std"][0] + d.normalization["mean"][0]))
    assert raw(a, a.x_test) == raw(b, b.x_test)
    parts = [raw(a, a.x_train), raw(a, a.x_val), raw(a, a.x_test)]
    assert sum(map(len, parts)) == 20 and set().union(*parts) == set(range(20))
    small = load_task(data=data, subset=10)
    assert len(small.y_train) + len(small.y_val) + len(small.y_test) == 10 and len(small.y_test) == 2


def test_unreadable_csv(tmp_path):
    (tmp_path / "latin1.csv").write_bytes("sample,label,a\nü,0,1\n".encode("latin-1"))
    with user_error(r"--data .*latin1.csv: not a readable UTF-8 .csv file"):
        load_task(data=tmp_path / "latin1.csv")


# ---- bad input -------------------------------------------------------------------------------------

def test_option_errors(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((4, 2, 1), np.float32), y=np.array([0, 1, 0, 1]))
    with user_error(r"--dataset mnist: unknown dataset; choose one of basic_motions, japanese_vowels, "
                    r"chinese_reviews"):
        load_task("mnist")
    assert set(BUNDLED) == {"basic_motions", "japanese_vowels", "chinese_reviews", "arrow_head", "osuleaf",
                            "pickup_gesture"}
    with user_error("either --dataset or --data, not both"):
        load_task("basic_motions", data=tmp_path / "d.npz")
    with user_error("--test needs --data"):
        load_task(test=tmp_path / "d.npz")
    with user_error("--val-fraction 1: must be at least 0 and below 1"):
        load_task(val_fraction=1)
    with user_error("--max-vocab 2: must be at least 3"):
        load_task("chinese_reviews", max_vocab=2)
    with user_error("--subset 0: must be at least 1"):
        load_task(subset=0)
    with user_error("--max-len 0: must be at least 1"):
        load_task(max_len=0)


@pytest.mark.parametrize("name, arrays, match", [
    ("float_y.npz", dict(x=np.zeros((3, 2, 1), np.float32), y=np.array([0.0, 1.0, 1.0])),
     r"--data .*float_y.npz: y must be integer labels"),
    ("one_name.npz", dict(x=np.zeros((3, 2, 1), np.float32), y=np.array(["a", "a", "a"])),
     r"--data .*one_name.npz: every label is 'a'; a classifier needs at least 2 classes"),
    ("short_y.npz", dict(x=np.zeros((3, 2, 1), np.float32), y=np.array([0, 1])), "x has 3 samples but y has 2"),
    ("no_y.npz", dict(x=np.zeros((3, 2, 1), np.float32)), "no labels 'y'"),
    ("nan.npz", dict(x=np.where(np.arange(12).reshape(3, 2, 2) == 7, np.nan, 0).astype(np.float32),
                     y=np.array([0, 1, 0])), r"NaN or Inf \(first at sample 1, step 1, feature 1\)"),
    ("negative.npz", dict(x=np.zeros((3, 2, 1), np.float32), y=np.array([0, -1, 1])),
     r"labels must be integers 0\.\.C-1, found -1"),
    ("one_class.npz", dict(x=np.zeros((3, 2, 1), np.float32), y=np.array([0, 0, 0])), "at least 2 classes"),
    ("neg_ids.npz", dict(x=np.array([[1, -2], [3, 0]]), y=np.array([0, 1])), "token ids must be >= 0"),
])
def test_bad_npz(tmp_path, name, arrays, match):
    np.savez(tmp_path / name, **arrays)
    with user_error(match):
        load_task(data=tmp_path / name)


@pytest.mark.parametrize("text, match", [
    ("", "the file is empty"),
    ("sample,label,a", "no data rows after the header"),
    ("sample,a\ns,1", "no column 'label'"),
    ("sample,label,step\ns,0,0", "no feature columns"),
    ("sample,label,a\ns,0,1\nt,1.5,2", r"bad.csv: label '1.5' on line 3 is a number but not an integer"),
    ("sample,label,a\ns,0,1\nt, ,2", r"bad.csv: the label on line 3 is empty"),
    ("sample,label,a,b\ns,0,1,2\nt,1,3,nan", r"feature 'b' is NaN or Inf on line 3 \(sample 't', step 0\)"),
    ("sample,label,a,b\ns,0,1,2\ns,0,inf,2", r"feature 'a' is NaN or Inf on line 3 \(sample 's', step 1\)"),
    ("sample,label,a\ns,0,1\nt,1,x", r"feature 'a' 'x' on line 3 is not a finite number"),
    ("sample,label,a\ns,0,1\ns,1,2", r"sample 's' has label 0 on line 2 but 1 on line 3"),
    ("sample,label,step,a\ns,0,1,1\ns,0,1,2", r"sample 's' has step 1 twice \(lines 2 and 3\)"),
    ("sample,label,step,a\ns,0,one,1", r"step 'one' on line 2 is not a finite number"),
    ("sample,label,a\ns,0,1,5", "line 2 has 4 fields but the header has 3"),
])
def test_bad_csv(tmp_path, text, match):
    (tmp_path / "bad.csv").write_text(text, encoding="utf-8")
    with user_error(match):
        load_task(data=tmp_path / "bad.csv")


def test_bad_files_and_splits(tmp_path):
    good = tmp_path / "good.npz"
    np.savez(good, x=np.zeros((4, 3, 2), np.float32), y=np.array([0, 1, 0, 1]))
    with user_error(r"--data .*missing.csv: no such file"):
        load_task(data=tmp_path / "missing.csv")
    with user_error(r"--test .*missing.npz: no such file"):
        load_task(data=good, test=tmp_path / "missing.npz")
    with user_error(r"--data .*notes.txt: unsupported file type '.txt'; give a .npz or .csv file"):
        load_task(data=tmp_path / "notes.txt")
    np.savez(tmp_path / "empty.npz", x=np.zeros((0, 3, 2), np.float32), y=np.zeros(0, np.int64))
    with user_error(r"--test .*empty.npz: x is empty"):
        load_task(data=good, test=tmp_path / "empty.npz")
    np.savez(tmp_path / "wide.npz", x=np.zeros((2, 3, 5), np.float32), y=np.array([0, 1]))
    with user_error(r"--test .*wide.npz has 5 features per step but --data .*good.npz has 2"):
        load_task(data=good, test=tmp_path / "wide.npz")
    np.savez(tmp_path / "tokens.npz", x=np.ones((2, 3), np.int64), y=np.array([0, 1]))
    with user_error(r"--test .*tokens.npz holds token ids \[N, T\] but --data .*good.npz holds feature sequences"):
        load_task(data=good, test=tmp_path / "tokens.npz")
    with user_error(r"the training split has only 4 sample\(s\): splitting off the validation set would leave "
                    r"the training split empty; give more training samples or a smaller --val-fraction"):
        load_task(data=good, test=good, val_fraction=0.9)
    np.savez(tmp_path / "one.npz", x=np.zeros((1, 3, 2), np.float32), y=np.array([1]))
    with user_error(r"--data .*one.npz has only 1 sample\(s\): splitting off the test set would leave the "
                    r"training split empty; give more samples or a --test file"):
        load_task(data=tmp_path / "one.npz")


def test_csv_test_file_with_other_feature_columns_is_refused(tmp_path):
    rows = "sample,label,{a},{b}\ns1,0,1.0,2.0\ns2,1,3.0,4.0\ns3,0,1.5,2.5\ns4,1,3.5,4.5\n"
    (tmp_path / "train.csv").write_text(rows.format(a="ax", b="ay"))
    (tmp_path / "test.csv").write_text(rows.format(a="ay", b="ax"))
    with pytest.raises(UserError, match="feature columns ay, ax but --data .* has ax, ay"):
        load_task(data=tmp_path / "train.csv", test=tmp_path / "test.csv", val_fraction=0)


def test_class_names_as_labels(tmp_path):
    """String labels in CSV and npz: classes are the training names in sorted order; a test name the training
    file lacks stops with one line."""
    rows = ["sample,label,a"] + [f"s{k},{name},{k}" for k, name in enumerate(["walk", "run", "0", "walk", "run", "0"] * 3)]
    (tmp_path / "d.csv").write_text("\n".join(rows) + "\n")
    task = load_task(data=tmp_path / "d.csv", val_fraction=0.0)
    assert task.classes == ["0", "run", "walk"]
    assert task.features == ["a"]
    np.savez(tmp_path / "t.npz", x=np.zeros((4, 2, 1), np.float32), y=np.array(["run", "walk", "0", "jump"]))
    np.savez(tmp_path / "d.npz", x=np.zeros((6, 2, 1), np.float32), y=np.array(["run", "walk", "0"] * 2))
    assert load_task(data=tmp_path / "d.npz", val_fraction=0.0).classes == ["0", "run", "walk"]
    with user_error(r"--test .*t.npz: label 'jump' is not among the training labels of --data .*d.npz \(0, run, walk\)"):
        load_task(data=tmp_path / "d.npz", test=tmp_path / "t.npz")
