"""sentiment.data.prepare: the validation split it carves and the embedding rows it draws."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sentiment.config import load_config
from sentiment.data.prepare import prepare_data


def write_urls(data_dir: Path, reviews_per_movie: int = 3) -> None:
    """urls_pos.txt / urls_neg.txt for a make_imdb tree: review i of each folder is about movie i // k."""
    root = data_dir / "aclImdb" / "train"
    for folder in ("pos", "neg"):
        n = len(list((root / folder).glob("*.txt")))
        lines = [f"http://www.imdb.com/title/tt{folder == 'pos'}{i // reviews_per_movie:06d}/usercomments"
                 for i in range(n)]
        (root / f"urls_{folder}.txt").write_text("\n".join(lines) + "\n")


def test_prepare_carves_validation_by_movie_and_falls_back_without_urls(tiny_data):
    cfg = load_config(None, [f"data.data_dir={tiny_data}", "data.valid_fraction=0.2"]).data
    without = prepare_data(cfg, with_embeddings=False)
    assert without.stats["valid_split"].startswith("random (movie split asked for")
    write_urls(tiny_data)
    movie = prepare_data(cfg, with_embeddings=False)
    assert movie.stats["valid_split"] == "movie"
    assert movie.stats["valid"] == 24 and movie.stats["valid_positive_share"] == 0.5  # 12 + 12 of 60 + 60
    random = prepare_data(load_config(None, [f"data.data_dir={tiny_data}", "data.valid_fraction=0.2",
                                             "data.valid_split=random"]).data, with_embeddings=False)
    assert random.stats["valid_split"] == "random"
    assert not np.array_equal(random.valid.offsets, movie.valid.offsets) or \
        not np.array_equal(random.valid.ids, movie.valid.ids)


def test_random_rows_for_words_glove_lacks_follow_the_run_seed(tiny_data):
    cfg = load_config(None, [f"data.data_dir={tiny_data}"]).data
    a, b = prepare_data(cfg, embedding_seed=1), prepare_data(cfg, embedding_seed=2)
    assert a.vocab.itos == b.vocab.itos and np.array_equal(a.valid.ids, b.valid.ids)  # same split and vocab
    missing = a.vocab.stoi["excellent"]  # a cue word make_imdb's GloVe file leaves out
    found = a.vocab.stoi["movie"]
    assert not np.array_equal(a.embeddings[missing], b.embeddings[missing])
    assert np.array_equal(a.embeddings[found], b.embeddings[found])
    assert np.array_equal(a.embeddings[missing], prepare_data(cfg, embedding_seed=1).embeddings[missing])


def test_glove_extra_words_read_their_vectors_instead_of_unk(tiny_data):
    """A word training never saw but GloVe knows: <unk> by default, its GloVe row with data.vocab_glove_extra."""
    glove = tiny_data / "glove" / "glove.6B.50d.txt"
    vector = " ".join(["0.25"] * 50)
    glove.write_text(glove.read_text() + f"marvellous {vector}\nabysmal {vector}\nzeppelin {vector}\n")
    for i, word in enumerate(["marvellous", "abysmal"]):  # two test reviews only use words train lacks
        (tiny_data / "aclImdb" / "test" / ("pos", "neg")[i] / "0_8.txt").write_text(f"{word} {word}.")
    base = load_config(None, [f"data.data_dir={tiny_data}"]).data
    plain = prepare_data(base)
    extra = prepare_data(load_config(None, [f"data.data_dir={tiny_data}", "data.vocab_glove_extra=2"]).data)
    assert "marvellous" not in plain.vocab.stoi and plain.stats["glove_extra_words"] == 0
    assert extra.vocab.itos[:len(plain.vocab)] == plain.vocab.itos  # the training words keep their ids
    assert extra.vocab.itos[len(plain.vocab):] == ["marvellous", "abysmal"]  # GloVe's order, up to the limit
    assert extra.stats["glove_extra_words"] == 2
    row = extra.vocab.stoi["marvellous"]
    assert np.allclose(extra.embeddings[row], 0.25)
    # the coverage figures still describe the training words only
    assert extra.stats["glove_vocab_coverage"] == plain.stats["glove_vocab_coverage"]
    assert {row, extra.vocab.stoi["abysmal"]} <= set(extra.test.ids.tolist())
    # without the option those two reviews are <unk> <unk> .
    assert np.count_nonzero(plain.test.ids == plain.vocab.unk_index) >= 4
    assert extra.stats["unk_token_share"]["test"] < plain.stats["unk_token_share"]["test"]
    assert plain.stats["unk_token_share"]["test"] == np.mean(plain.test.ids == plain.vocab.unk_index)


def test_a_warm_prepare_loads_neither_torch_nor_spacy(tmp_path):
    """Importing torch and spaCy costs ~2 s; a prepare whose caches are warm needs neither."""
    import subprocess
    import sys

    csv_file = tmp_path / "t.csv"
    csv_file.write_text("text,label\n" + "".join(f"word{i % 7} text {i},{'ab'[i % 2]}\n" for i in range(40)))
    script = (
        "import sys\n"
        "from sentiment.config import load_config\n"
        "from sentiment.data.prepare import prepare_data\n"
        f"cfg = load_config(None, ['data.dataset=files', 'data.train_file={csv_file}', 'data.data_dir={tmp_path}',"
        " 'data.glove_dim=null', 'model.embed_dim=8', 'data.workers=1']).data\n"
        "data = prepare_data(cfg)\n"
        "print(data.stats['corpus_from_cache'], 'torch' in sys.modules, 'spacy' in sys.modules)\n"
    )
    env = {k: v for k, v in __import__("os").environ.items() if k != "SENTIMENT_CACHE_DIR"}

    def run() -> str:
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
        assert done.returncode == 0, done.stderr
        return done.stdout.split()

    cold = run()
    assert cold[0] == "False" and cold[2] == "True"  # cold: spaCy tokenizes (and its thinc loads torch)
    assert run() == ["True", "False", "False"]  # warm: from the cache alone


def test_vocab_from_all_texts_counts_the_training_rows_train_limit_left_out_and_never_test(tiny_data):
    """data.vocab_from: all_texts gives a few-label run the vocabulary of every training text (as a model
    pretrained on them has), while it still trains on the kept rows and never counts a test word."""
    (tiny_data / "aclImdb" / "test" / "pos" / "0_9.txt").write_text("A zzztestonlyword film.", encoding="utf-8")
    for i in range(50, 60):  # in several files, so that some are training rows whatever validation takes
        (tiny_data / "aclImdb" / "train" / "neg" / f"{i}_1.txt").write_text("A qqqrareword film.", encoding="utf-8")
    base = [f"data.data_dir={tiny_data}"]
    everything = prepare_data(load_config(None, base).data, with_embeddings=False)
    few = [*base, "data.train_limit=6"]
    kept = prepare_data(load_config(None, few).data, with_embeddings=False)
    fair = prepare_data(load_config(None, [*few, "data.vocab_from=all_texts"]).data, with_embeddings=False)
    assert len(fair.train.labels) == len(kept.train.labels) == 6  # the same labeled rows train
    assert np.array_equal(fair.train.labels, kept.train.labels)
    assert len(kept.vocab) < len(fair.vocab) == len(everything.vocab)
    assert fair.vocab.itos == everything.vocab.itos
    assert "qqqrareword" in everything.vocab.stoi and "qqqrareword" in fair.vocab.stoi and "qqqrareword" not in kept.vocab.stoi
    assert "zzztestonlyword" not in fair.vocab.stoi


def test_limit_seed_draws_other_few_labels_and_keeps_the_validation_split(tiny_data):
    base = [f"data.data_dir={tiny_data}", "data.train_limit=10"]
    a = prepare_data(load_config(None, base).data, with_embeddings=False)
    same = prepare_data(load_config(None, [*base, "data.limit_seed=42"]).data, with_embeddings=False)  # split_seed's
    other = prepare_data(load_config(None, [*base, "data.limit_seed=7"]).data, with_embeddings=False)
    assert np.array_equal(a.membership["train"], same.membership["train"])
    assert not np.array_equal(a.membership["train"], other.membership["train"])
    assert np.array_equal(a.membership["valid"], other.membership["valid"])
    assert np.array_equal(a.valid.labels, other.valid.labels) and np.array_equal(a.valid.offsets, other.valid.offsets)
