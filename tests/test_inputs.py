"""The one reader of forget files (rem.cli.inputs.read_forget), for checkpoints and a user's own data alike,
and rem.heal as the deprecated alias of rem.unlearn."""

import os
import threading

import pytest
import torch

from rem.cli.inputs import read_forget
from rem.errors import DataError, IndexSetError

FILES = ("cat/0.png", "cat/1.png", "dog/0.png", "dog/1.png")


@pytest.mark.parametrize(
    "raw, files, want",
    [
        (b"1 2 3\n", None, [1, 2, 3]),
        (b"1,2, 3", None, [1, 2, 3]),
        (b"[4, 5]", None, [4, 5]),
        ("\ufeff1, 2, 3\n".encode(), None, [1, 2, 3]),  # a UTF-8 byte-order mark
        ("\ufeff[4, 5]".encode(), None, [4, 5]),
        (b"# found by hand\n7\n# more\n8\n", None, [7, 8]),  # comment lines
        (b"1\r\n2\r\n3\r\n", None, [1, 2, 3]),  # CRLF
        (b"", None, []),  # empty: the task says the set is empty
        (b"cat/1.png\ndog/0.png\n", FILES, [1, 2]),  # file names of an image folder
        (b"# names\r\ncat/1.png\r\n3\r\n", FILES, [1, 3]),  # names and indices, CRLF, a comment
        (b'["dog/1.png", 0]', FILES, [3, 0]),
        (b"2 0", FILES, [2, 0]),  # indices into an image folder
    ],
)
def test_every_format_reads(tmp_path, raw, files, want):
    f = tmp_path / "found.txt"
    f.write_bytes(raw)
    assert read_forget(f, files).tolist() == want


@pytest.mark.parametrize(
    "raw, files, error, words",
    [
        (b"1 2 2", None, IndexSetError, "duplicated entries"),
        (b"cat/1.png\ncat/1.png\n", FILES, IndexSetError, "['cat/1.png']"),  # as written, not as indices
        (b"cat/1.png\n1\n", FILES, IndexSetError, "1 (= cat/1.png)"),
        (b"1 2 123456789012345678901", None, IndexSetError, "range"),
        (b"[1, 2,", None, DataError, "not valid JSON"),
        (b"[1, true]", None, DataError, "one list of integers"),
        (b'{"a": 1}', None, DataError, "integer indices"),  # not a list: read as text, then refused
        (b"cat/1.png", None, DataError, "file names work only for image folders"),
        (b"cat/9.png", FILES, DataError, "neither indices nor images"),
        (b"\xff\xfe1", None, DataError, "not UTF-8"),
    ],
)
def test_bad_files_are_named(tmp_path, raw, files, error, words):
    f = tmp_path / "found.txt"
    f.write_bytes(raw)
    with pytest.raises(error) as e:
        read_forget(f, files)
    assert words in str(e.value) and "\n" not in str(e.value)


def test_missing_and_folder(tmp_path):
    with pytest.raises(DataError, match="no forget file"):
        read_forget(tmp_path / "nothing.txt")
    with pytest.raises(DataError, match="is a folder"):
        read_forget(tmp_path)


def test_a_pipe_is_read_once(tmp_path):
    """``--forget <(seq 0 9)``: the shell passes /dev/fd/N, a pipe that is not a regular file."""
    r, w = os.pipe()

    def write():
        with os.fdopen(w, "w") as out:
            out.write("\n".join(str(i) for i in range(10)) + "\n")

    t = threading.Thread(target=write)
    t.start()
    try:
        assert read_forget(f"/dev/fd/{r}").tolist() == list(range(10))
    finally:
        t.join()
        os.close(r)


def test_heal_is_a_deprecated_alias_of_unlearn():
    import rem
    from rem.data.datasets import make_generated

    data = make_generated(n_train=64, n_test=16, num_classes=4, size=8, seed=0)
    model = torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4)
    )
    images, labels = data.x_train, data.y_train
    kw = {"method": "finetune", "device": "cpu", "steps": 2, "batch_size": 16}
    with pytest.warns(DeprecationWarning, match="rem.unlearn"):
        healed, _ = rem.heal(model, (images, labels), [0, 1], **kw)
    same, _ = rem.unlearn(model, (images, labels), [0, 1], **kw)
    assert type(healed) is type(model)
    for a, b in zip(healed.state_dict().values(), same.state_dict().values()):
        assert torch.equal(a, b)
