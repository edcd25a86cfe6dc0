import numpy as np
import pytest
import scipy.io

from feature_select.data import (
    DatasetFileError,
    load_dataset,
    load_scikit_feature,
    make_synthetic,
    split_and_scale,
)
from feature_select.evaluation import evaluate_subset, ranking_scores, recovery_rate
from research_systems_core.data import DatasetNotFoundError, resolve_data_dir


def test_missing_mat_file_names_the_file(tmp_path):
    with pytest.raises(DatasetNotFoundError, match=r"scikit-feature/madelon\.mat"):
        load_scikit_feature("madelon", tmp_path)


def test_corrupt_mat_file_names_the_file(tmp_path):
    folder = tmp_path / "scikit-feature"
    folder.mkdir()
    (folder / "madelon.mat").write_bytes(b"MATLAB 5.0 garbage" + bytes(50))
    with pytest.raises(DatasetFileError, match="madelon.mat"):
        load_scikit_feature("madelon", tmp_path)


def test_mat_file_without_keys_and_round_trip(tmp_path):
    folder = tmp_path / "scikit-feature"
    folder.mkdir()
    scipy.io.savemat(folder / "arcene.mat", {"A": np.ones((3, 2))})
    with pytest.raises(DatasetFileError, match=r"arcene\.mat has no X or Y"):
        load_scikit_feature("arcene", tmp_path)
    scipy.io.savemat(
        folder / "arcene.mat", {"X": np.arange(12.0).reshape(6, 2), "Y": np.array([[1], [-1]] * 3)}
    )
    data = load_scikit_feature("arcene", tmp_path)
    assert data.x.shape == (6, 2) and sorted(set(data.y)) == [0, 1]


def test_real_scikit_feature_file_if_available():
    path = resolve_data_dir() / "scikit-feature" / "madelon.mat"
    if not path.exists():
        pytest.skip(f"{path} not available")
    data = load_dataset("madelon")
    assert data.x.shape == (2600, 500) and data.n_classes == 2
    split = split_and_scale(data)
    assert split.x_train.shape == (2080, 500)
    # StandardScaler fitted on the training split only
    np.testing.assert_allclose(split.x_train.mean(0), 0, atol=1e-4)
    assert abs(float(split.x_test.mean())) > 1e-6


def test_minmax_scaler_is_fitted_on_train_only():
    split = split_and_scale(load_dataset("wine"))
    assert split.x_train.min() == pytest.approx(0) and split.x_train.max() == pytest.approx(1)
    assert split.x_test.min() < 0 or split.x_test.max() > 1 or split.x_test.shape[0] == 36


def test_synthetic_informative_indices_are_the_informative_columns():
    data = make_synthetic(n_samples=400, n_features=50, n_informative=5, seed=3)
    assert len(data.informative) == 5
    from sklearn.feature_selection import f_classif

    f = np.nan_to_num(f_classif(data.x, data.y)[0])
    noise = np.setdiff1d(np.arange(50), data.informative)
    assert np.median(f[data.informative]) > np.max(f[noise]) / 2


def test_ranking_scores_hand_computed():
    rows = [
        {"dataset": "a", "k": 5, "method": "m1", "svc": 0.9},
        {"dataset": "a", "k": 5, "method": "m2", "svc": 0.8},
        {"dataset": "a", "k": 5, "method": "m3", "svc": 0.8},
        {"dataset": "b", "k": 5, "method": "m1", "svc": 0.5},
        {"dataset": "b", "k": 5, "method": "m1", "svc": 0.7},  # mean 0.6
        {"dataset": "b", "k": 5, "method": "m2", "svc": 0.7},
        {"dataset": "b", "k": 5, "method": "m3", "svc": 0.1},
    ]
    # cell a: m1 beats 2 -> 2; m2, m3 tie -> 0.5 each. cell b: m2 2, m1 1, m3 0
    assert ranking_scores(rows) == {"m1": 3.0, "m2": 2.5, "m3": 0.5}


def test_recovery_rate_and_evaluate_subset():
    assert recovery_rate(np.array([1, 2, 3, 9]), np.array([1, 3, 5])) == 0.5
    rng = np.random.default_rng(0)
    x = rng.normal(size=(80, 5))
    y = (x[:, 2] > 0).astype(int)
    scores = evaluate_subset(x[:60], y[:60], x[60:], y[60:], np.array([2]))
    assert set(scores) == {"knn", "extratrees", "svc"} and scores["svc"] > 0.8
    with pytest.raises(ValueError, match="at least one"):
        evaluate_subset(x, y, x, y, np.array([], dtype=int))


def test_reproduction_verdict_rules():
    from feature_select.reproduce import _verdict

    assert _verdict({"neurofs": 5.0, "a": 3.0, "b": 1.0}, {"neurofs": 0.5}, 0.04)[0] == "reproduced"
    assert _verdict({"a": 5.0, "neurofs": 3.0, "b": 1.0, "c": 0.0}, {"neurofs": 0.5}, 0.04)[0] == "partly"
    verdict, reason = _verdict({"a": 5.0, "b": 3.0, "neurofs": 1.0}, {"neurofs": 0.05}, 0.04)
    assert verdict == "not reproduced at this scale" and "#3 of 3" in reason


def test_any_file_by_path_or_by_name_in_the_data_directory(tmp_path):
    import scipy.sparse as sp

    x = np.arange(40.0).reshape(10, 4) % 7
    y = np.array([0, 1] * 5)
    (tmp_path / "sub").mkdir()
    scipy.io.savemat(tmp_path / "sub" / "genes.mat", {"X": sp.csr_matrix(x), "Y": y[:, None]})
    np.savez(tmp_path / "blobs.npz", X=x, y=y)
    lines = ["f0,f1,class,f2,f3"] + [
        ",".join(map(str, [*row[:2], label, *row[2:]])) for row, label in zip(x, y, strict=True)
    ]
    (tmp_path / "table.csv").write_text("\n".join(lines) + "\n")
    mat = load_dataset("genes", tmp_path)  # found anywhere under the data directory, by stem
    assert mat.x.shape == (10, 4) and hasattr(mat.x, "toarray")  # a sparse .mat stays sparse
    np.testing.assert_array_equal(mat.x.toarray(), x)
    npz = load_dataset(str(tmp_path / "blobs.npz"))
    csv = load_dataset(str(tmp_path / "table.csv"))  # the "class" column is the label
    for data in (npz, csv):
        np.testing.assert_array_equal(data.x, x)
        np.testing.assert_array_equal(data.y, y)
    with pytest.raises(DatasetNotFoundError, match="did you mean \\['genes'"):
        load_dataset("gene", tmp_path)


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("a.mat", {"fea": np.ones((4, 2))}, r"has no X or Y variable \(found \['fea'\]\)"),
        ("b.npz", {"features": np.ones((4, 2))}, r"needs arrays X and y"),
        ("c.mat", {"X": np.ones((4, 2)), "Y": np.zeros(4)}, "single class"),
        ("d.mat", {"X": np.full((4, 2), np.nan), "Y": np.arange(4) % 2}, "NaN or infinite"),
        ("e.mat", {"X": np.ones((4, 2)), "Y": np.arange(3)}, "3 labels"),
        ("f.csv", "a,b,label\n1,x,0\n2,3,1\n", "not a number"),
        ("g.txt", "", "suffix must be one of"),
    ],
)
def test_bad_data_files_are_named_with_the_problem(tmp_path, name, content, match):
    path = tmp_path / name
    if name.endswith(".mat"):
        scipy.io.savemat(path, content)
    elif name.endswith(".npz"):
        np.savez(path, **content)
    else:
        path.write_text(content)
    with pytest.raises(ValueError, match=match):
        load_dataset(str(path))


def test_splits_are_stratified_and_differ_by_seed():
    data = load_dataset("wine")
    a, b = split_and_scale(data, seed=0), split_and_scale(data, seed=1)
    assert not np.array_equal(a.y_test, b.y_test)
    share = np.bincount(data.y) / len(data.y)
    np.testing.assert_allclose(np.bincount(a.y_test) / len(a.y_test), share, atol=0.03)
