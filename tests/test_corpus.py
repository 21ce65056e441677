from pathlib import Path

import pytest

from assistant.config import ConfigError, load_config
from assistant.corpus.corpus import CorpusError, load_corpus, read_document
from tiny_model import copy_tiny_corpus


def test_fixture_corpus_loads(tiny_corpus):
    assert tiny_corpus.name == "tiny"
    assert {d.path for d in tiny_corpus.documents} == {"docs/returns.md", "docs/service.md"}
    assert len(tiny_corpus.questions("train", "answerable")) == 3
    assert tiny_corpus.document("docs/returns.md").title == "Returns"


def test_fingerprint_follows_content(tiny_corpus_dir):
    before = load_corpus(tiny_corpus_dir).fingerprint()
    assert load_corpus(tiny_corpus_dir).fingerprint() == before
    (tiny_corpus_dir / "docs" / "returns.md").write_text("# Returns\n\nChanged.\n")
    assert load_corpus(tiny_corpus_dir).fingerprint() != before


def test_every_bad_line_is_named(tiny_corpus_dir):
    qa = tiny_corpus_dir / "qa.jsonl"
    lines = qa.read_text().splitlines()
    lines[1] = "{not json"
    lines[3] = lines[3].replace('"question": "How much does return shipping cost?", ', "")
    lines[5] = lines[5].replace('"split": "test"', '"split": "holdout"')
    lines[7] = lines[7].replace("docs/service.md", "docs/missing.md")
    qa.write_text("\n".join(lines) + "\n")
    with pytest.raises(CorpusError) as e:
        load_corpus(tiny_corpus_dir)
    msgs = [str(p) for p in e.value.problems]
    assert any(":2: invalid JSON" in m for m in msgs)
    assert any(":4: missing field 'question'" in m for m in msgs)
    assert any(":6: split:" in m and "holdout" in m for m in msgs)
    assert any(":8: source 'docs/missing.md'" in m for m in msgs)
    assert len(msgs) == 4


def test_config_errors_name_the_line(tmp_path):
    cfg = tmp_path / "corpus.yaml"
    cfg.write_text("name: x\ngeneration:\n  batch_size: 0\nlora:\n  rank: 8\n")
    with pytest.raises(ConfigError) as e:
        load_config(cfg)
    text = str(e.value)
    assert f"{cfg}:3: generation.batch_size" in text
    assert f"{cfg}:5: unknown field 'lora.rank'" in text
    cfg.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(cfg)


def test_html_documents_keep_headings(tmp_path):
    page = tmp_path / "p.html"
    page.write_text("<html><head><style>x{}</style></head><body><h1>Care</h1><p>Wash cold.</p>"
                    "<h2>Drying</h2><p>Air dry only.</p><script>evil()</script></body></html>")
    text = read_document(page)
    assert text.startswith("# Care") and "## Drying" in text and "Air dry only." in text
    assert "evil" not in text and "x{}" not in text


def test_artifacts_follow_the_corpus_folder_not_the_working_directory(tmp_path, monkeypatch):

    from assistant.corpus.corpus import PROJECT_ROOT

    a, b = tmp_path / "one" / "shop", tmp_path / "two" / "shop"  # same name, two folders
    for d in (a, b):
        copy_tiny_corpus(d)
    monkeypatch.chdir(tmp_path)
    runs_a = load_corpus("one/shop").runs_dir
    monkeypatch.chdir(tmp_path / "one")
    assert load_corpus("shop").runs_dir == runs_a == a.resolve() / "runs"  # from anywhere, the same folder
    assert load_corpus(b).runs_dir != runs_a  # same corpus name, never the same artifacts
    assert load_corpus(PROJECT_ROOT / "corpora" / "ecostride").runs_dir == PROJECT_ROOT / "runs" / "ecostride"
    with open(a / "corpus.yaml", "a") as f:
        f.write("runs_dir: ../artifacts\n")
    assert load_corpus(a).runs_dir == (tmp_path / "one" / "artifacts").resolve()


# -- untrusted settings -----------------------------------------------------------------------
LAUGHS = "name: x\na: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{n}: &{n} [{', '.join(['*' + p] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi"))


@pytest.mark.parametrize("text,line", [
    (LAUGHS, 3),  # a "billion laughs": 9^9 strings from 300 bytes
    ("name: x\nmodel: &m {name: tiny-random}\ngenerator: *m\n", 3),
    ("name: x\nbase: &b {top_k: 3}\nretrieval:\n  <<: *b\n", 4),  # merge keys are aliases too
])
def test_yaml_aliases_are_refused_in_milliseconds(tmp_path, text, line):
    import time

    cfg = tmp_path / "corpus.yaml"
    cfg.write_text(text)
    t0 = time.perf_counter()
    with pytest.raises(ConfigError) as e:
        load_config(cfg)
    assert time.perf_counter() - t0 < 0.5
    assert str(e.value) == (f"{cfg}:{line}: YAML aliases (*name, <<: *name) are not accepted in settings; "
                            "write the value out in full")


def test_settings_files_that_are_not_settings(tmp_path):
    import os

    cfg = tmp_path / "corpus.yaml"
    cfg.write_bytes(b"\xef\xbb\xbfname: bom\n")  # Notepad's byte-order mark
    assert load_config(cfg).name == "bom"
    cfg.write_text("name: x\ndescription: " + "y" * 300_000 + "\n")
    with pytest.raises(ConfigError, match=r"corpus.yaml:1: over the 256 KB"):
        load_config(cfg)
    cfg.unlink()
    os.mkfifo(cfg)  # a named pipe: reading it would block forever
    with pytest.raises(ConfigError, match=r"corpus.yaml:1: is a named pipe, not a regular file"):
        load_config(cfg)


# -- untrusted documents ----------------------------------------------------------------------
def _warnings(corpus) -> dict[str, str]:
    return {Path(p.file).name: p.message for p in corpus.problems if p.warning}


def test_links_out_of_the_corpus_pipes_and_images_are_skipped_and_named(tiny_corpus_dir, tmp_path):
    import os
    import time

    docs = tiny_corpus_dir / "docs"
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0:the secret\n")
    (docs / "p.txt").symlink_to(secret)  # docs/p.txt -> a file outside the corpus
    (docs / "inside.md").symlink_to(docs / "returns.md")  # a link inside the corpus is fine
    (docs / "loop.md").symlink_to(docs / "loop.md")
    (docs / "linked").symlink_to(tmp_path, target_is_directory=True)  # a folder link: never followed
    os.mkfifo(docs / "pipe.md")  # reading it would block forever
    (docs / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    (docs / ".hidden.md").write_text("# hidden\n\nnot a document\n")
    t0 = time.perf_counter()
    corpus = load_corpus(tiny_corpus_dir)  # strict: none of these blocks the build
    assert time.perf_counter() - t0 < 10
    assert {d.path for d in corpus.documents} == {"docs/returns.md", "docs/service.md", "docs/inside.md"}
    assert not any("secret" in d.text for d in corpus.documents)
    w = _warnings(corpus)
    assert set(w) == {"p.txt", "loop.md", "linked", "pipe.md", "logo.png"}
    assert "outside the corpus folder" in w["p.txt"] and "named pipe" in w["pipe.md"]
    assert "unsupported document type '.png'; skipped" in w["logo.png"] and "broken link" in w["loop.md"]
    assert all(p.line == 0 and "\n" not in str(p) for p in corpus.problems)  # one line each, named by check


def test_a_bom_does_not_hide_the_first_heading(tiny_corpus_dir):
    from assistant.corpus.chunking import sections

    (tiny_corpus_dir / "docs" / "bom.md").write_bytes("\ufeff# Warranty\n\nTwo years.\n".encode())
    doc = load_corpus(tiny_corpus_dir).document("docs/bom.md")
    assert doc.title == "Warranty" and sections(doc) == [("Warranty", ["Two years."])]


def test_qa_and_settings_links_out_of_the_corpus_are_refused(tiny_corpus_dir, tmp_path):
    outside = tmp_path / "elsewhere.jsonl"
    outside.write_text((tiny_corpus_dir / "qa.jsonl").read_text())
    (tiny_corpus_dir / "qa.jsonl").unlink()
    (tiny_corpus_dir / "qa.jsonl").symlink_to(outside)
    with pytest.raises(CorpusError) as e:
        load_corpus(tiny_corpus_dir)
    assert [p.message.split(";")[0] for p in e.value.problems] == ["is a link out of the corpus folder"]


def test_runs_dir_stays_inside_the_corpus_unless_the_user_allows_more(tiny_corpus_dir, tmp_path, monkeypatch):
    import tempfile

    from assistant.corpus.corpus import PROJECT_ROOT

    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # the corpus is no longer in the temp folder
    monkeypatch.delenv("ASSISTANT_RUNS_ROOTS", raising=False)
    yaml_text = (tiny_corpus_dir / "corpus.yaml").read_text().rsplit("runs_dir:", 1)[0]

    def problems(runs_dir: str) -> list[str]:
        (tiny_corpus_dir / "corpus.yaml").write_text(yaml_text + f"runs_dir: {runs_dir}\n")
        try:
            load_corpus(tiny_corpus_dir)
        except CorpusError as e:
            return [str(p) for p in e.problems]
        return []

    line = len(yaml_text.splitlines()) + 1
    for bad in ("/etc/evil", "../elsewhere", "sub/../../x"):
        got = problems(bad)
        assert len(got) == 1 and got[0].startswith(f"{tiny_corpus_dir / 'corpus.yaml'}:{line}: runs_dir {bad!r} "), got
        assert "ASSISTANT_RUNS_ROOTS" in got[0]
    (tiny_corpus_dir / "out").symlink_to("/etc")
    assert problems("out/evil")  # a link does not get around it
    (tiny_corpus_dir / "loop").symlink_to("loop")
    assert "cannot be resolved" in problems("loop/x")[0]
    assert problems("artifacts") == [] and problems(str(PROJECT_ROOT / "runs" / "x")) == []
    monkeypatch.setenv("ASSISTANT_RUNS_ROOTS", str(tmp_path))  # the user's explicit choice
    assert problems("../elsewhere") == [] and problems("/etc/evil")


def test_a_read_only_runs_folder_is_one_line(tmp_path, monkeypatch):
    import errno
    import os

    from assistant.storage import NotWritable, atomic_write_text, hold_lock, lock_for

    real_open = os.open

    def read_only(path, *args, **kwargs):  # as on a read-only mount (root ignores chmod)
        if str(path).startswith(str(tmp_path / "ro")):
            raise OSError(errno.EROFS, "Read-only file system")
        return real_open(path, *args, **kwargs)

    (tmp_path / "ro").mkdir()
    monkeypatch.setattr(os, "open", read_only)
    for attempt in (lambda: hold_lock(lock_for(tmp_path / "ro" / "x.json", timeout=0), "x").__enter__(),
                    lambda: lock_for(tmp_path / "ro" / "y.json").__enter__(),
                    lambda: atomic_write_text(tmp_path / "ro" / "z.json", "{}")):
        with pytest.raises(NotWritable) as e:
            attempt()
        assert str(e.value).startswith(f"cannot write in {tmp_path / 'ro'} (Read-only file system); ")
    (tmp_path / "file").write_text("x")  # a file where the runs folder belongs
    with pytest.raises(NotWritable):
        lock_for(tmp_path / "file" / "sub" / "x.json")
