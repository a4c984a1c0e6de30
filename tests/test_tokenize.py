"""sentiment.data.tokenize: HTML-break cleaning and the chunk-memoised tokenizer, checked against plain spaCy."""

from __future__ import annotations

import pytest
import spacy

from _tokenizer import Tokenizer
from sentiment.data.tokenize import (IMDB_CLEANING, MAX_CHUNK, TOKENIZER_VERSION, Cleaning, check_text_pipeline,
                                     clean_text, split_chunks, text_pipeline_version, tokenize_chunks)
from sentiment.errors import SentimentError

TRICKY = [
    "I don't know, can't say. I'm gonna go, won't you?",
    "Don't DON'T dont Can't CAN'T cannot Cannot gonna Gonna GONNA gotta",
    "I'll we've they'd Let's y'all ya'll 'cause 'em o'clock rock'n'roll",
    "The U.S. and the U.K. met Dr. Smith and Mr.Jones at 5 p.m. on Jan. 3rd, e.g. i.e. etc. vs.",
    "Nice :-) ;) :D :( :-( <3 (: ^_^ xD :P",
    "see https://www.imdb.com/title/tt0111161/?ref_=nv_sr_1 and www.example.com. or http://x.org/a(b)",
    "mail john.doe+imdb@example.co.uk, or me@x.org!",
    "A well-known, state-of-the-art, so-so film -- really; 50-50 odds and a re-make.",
    "It cost $5.99 (or £3, €4.50); I give it 10/10, 9.5/10, 100% and 3.5 stars. 1,000,000 viewers",
    "10km 5kg 3pm 4:30pm 90mins 2nd 1990s '90s #1 No.1 @user",
    "\"Quoted\" and 'single' and “curly” ‘quotes’ and (parens) [brackets] {braces}",
    "Wait... what?! Hmm.... Ok.. no!!! ??? -- — – …",
    "café naïve Zoë résumé Ångström ﬁne straße İstanbul ΣΟΦΙΑ",
    "emoji 😀👍🏽 ok ❤️ ★★★★☆",
    "double  spaces,   triple   too",
    "tabs\tand\ttabs\nnewlines\r\nwindows\n\n\nparagraphs",
    "non\xa0breaking\xa0space and\u2009thin\u2003em\u3000ideographic spaces",
    "zero\u200bwidth and soft\u00adhyphen",
    "line<br />break<br/>and<BR>caps<Br />and<br >spaced",
    "  leading and trailing whitespace  \n",
    "",
    "   \t\n ",
    "'s 's 'S N'T n't ''",
]


@pytest.fixture(scope="module")
def nlp():
    return spacy.blank("en")


def reference(nlp, text: str, lowercase: bool = True) -> list[str]:
    tokens = [t.text for t in nlp(clean_text(text)) if not t.is_space]
    return [t.lower() for t in tokens] if lowercase else tokens


# --- clean_text -------------------------------------------------------------------------------------


@pytest.mark.parametrize("tag", ["<br />", "<br/>", "<BR>", "<br>", "<Br />", "<br  />", "<BR/>"])
def test_clean_text_removes_breaks(tag: str):
    assert clean_text(f"one{tag}two") == "one two"
    assert clean_text(f"end.{tag}{tag}Start") == "end.  Start"


def test_clean_text_keeps_other_markup_and_text():
    text = "a <b>bold</b> <brave> claim <i>x</i> br / >"
    assert clean_text(text) == text


def test_split_chunks():
    assert split_chunks("Hello,  world!<br /><br />Bye\tnow\xa0ok") == ["Hello,", "world!", "Bye", "now", "ok"]
    assert split_chunks("") == []
    assert split_chunks("<br /> \n") == []


# --- Cleaning: placeholders and normalisation (files datasets) -------------------------------------


def test_placeholders_replace_urls_and_mentions_but_not_emails():
    clean = Cleaning(html_breaks=False, placeholders=True)
    assert split_chunks("@united see https://t.co/x1?a=b,www.aa.com now.@VirginAmerica", clean) == [
        "xxuser", "see", "xxurl", "now.", "xxuser"]
    assert split_chunks("mail me@example.com", clean) == ["mail", "me@example.com"]


def test_normalize_unescapes_entities_and_makes_quotes_ascii():
    clean = Cleaning(html_breaks=False, normalize=True)
    assert clean("Tom &amp; Jerry &gt;&lt; don\u2019t \u201cso\u201d \u2018so\u2019") == "Tom & Jerry >< don't \"so\" 'so'"
    assert tokenize_chunks(split_chunks("I don\u2019t", clean)) == [["i"], ["do", "n't"]]
    # without it the text stays as written
    assert Cleaning(html_breaks=False)("&amp; don\u2019t") == "&amp; don\u2019t"


def test_normalize_runs_before_placeholders_and_breaks():
    clean = Cleaning(html_breaks=True, placeholders=True, normalize=True)
    assert split_chunks("a&lt;br /&gt;b http://x.org/?a=1&amp;b=2 c", clean) == ["a", "b", "xxurl", "c"]


def test_cleaning_keys_differ_and_old_keys_are_unchanged():
    # cache keys written before `normalize` existed must still match
    assert IMDB_CLEANING.key() == "br=1,ph=0"
    assert Cleaning(html_breaks=False, placeholders=True).key() == "br=0,ph=1"
    keys = {Cleaning(html_breaks=b, placeholders=p, normalize=n).key()
            for b in (False, True) for p in (False, True) for n in (False, True)}
    assert len(keys) == 8


# --- Tokenizer vs spaCy -----------------------------------------------------------------------------


@pytest.mark.parametrize("text", TRICKY)
def test_tokenizer_equals_spacy(nlp, text: str):
    assert Tokenizer()(text) == reference(nlp, text)


@pytest.mark.parametrize("text", TRICKY)
def test_tokenizer_keeps_case_when_asked(nlp, text: str):
    assert Tokenizer(lowercase=False)(text) == reference(nlp, text, lowercase=False)


def test_tokenizer_splits_contractions_and_lowercases():
    tok = Tokenizer()
    assert tok("I Don't know") == ["i", "do", "n't", "know"]
    assert tok("Gonna Can't") == ["gon", "na", "ca", "n't"]
    assert tok("Great.<br /><br />Really!") == ["great", ".", "really", "!"]
    assert Tokenizer(lowercase=False)("I Don't") == ["I", "Do", "n't"]


def test_whole_tricky_corpus_in_one_text(nlp):
    text = " ".join(TRICKY)
    assert Tokenizer()(text) == reference(nlp, text)
    assert Tokenizer(lowercase=False)(text) == reference(nlp, text, lowercase=False)


def test_memo_gives_the_same_result_on_repeat(nlp):
    tok = Tokenizer()
    first = [tok(t) for t in TRICKY]
    second = [tok(t) for t in TRICKY]
    assert first == second
    assert list(tok.pipe(TRICKY)) == first


def test_memo_is_bounded():
    tok = Tokenizer(memo_size=4)
    assert tok("one two three") == ["one", "two", "three"]
    # 3 memoised + 3 new > 4: the memo is cleared before the new chunks go in
    assert tok("four five six") == ["four", "five", "six"]
    assert len(tok._memo.table) <= 4


def test_memo_overflow_with_a_mix_of_seen_and_new_chunks(nlp):
    tok = Tokenizer(memo_size=3)
    assert tok("a b") == ["a", "b"]
    # 'a' is memoised, 'c' and 'd' are new: 2 + 2 > 3 clears the memo, 'a' must still be tokenized
    assert tok("a c d") == ["a", "c", "d"]
    tok = Tokenizer(memo_size=3)
    for text in TRICKY:
        assert tok(text) == reference(nlp, text)


def test_lowercase_and_cased_tokenizers_do_not_share_results():
    lower, cased = Tokenizer(), Tokenizer(lowercase=False)
    assert lower("Hello World") == ["hello", "world"]
    assert cased("Hello World") == ["Hello", "World"]
    assert lower("Hello World") == ["hello", "world"]


def test_tokenize_chunks(nlp):
    chunks = ["Don't", "hello", "U.S.", "(great)", "Gonna", "10/10"]
    out = tokenize_chunks(chunks, lowercase=False)
    assert out == [[t.text for t in nlp(c)] for c in chunks]
    assert tokenize_chunks(chunks, lowercase=True) == [[t.lower() for t in toks] for toks in out]
    assert tokenize_chunks([]) == []


# Pairs where spaCy's special-case pass, run over a whole text, reaches across the space between chunks:
# nlp("x:) :)b") splits the second ':)' although nlp(":)b") keeps it. A memoised per-chunk tokenizer must
# give each chunk its tokens alone, whatever chunks were tokenized with it.
CROSS_CHUNK_PAIRS = [("x:)", ":)b"), ("x:))", ":}b"), ("ThisdveOct.:))", ":}we'll've"), ("a''", "''heart''")]


@pytest.mark.parametrize("first, second", CROSS_CHUNK_PAIRS)
def test_chunk_tokens_do_not_depend_on_neighbouring_chunks(nlp, first: str, second: str):
    alone = [[t.text for t in nlp(c)] for c in (first, second)]
    assert tokenize_chunks([first, second], lowercase=False) == alone
    assert tokenize_chunks([second, first], lowercase=False) == alone[::-1]
    assert tokenize_chunks([second], lowercase=False) == alone[1:]
    # so the Tokenizer's answer does not depend on what its memo saw before
    warm = Tokenizer(lowercase=False)
    warm(first)
    assert warm(f"{first} {second}") == Tokenizer(lowercase=False)(f"{first} {second}") == alone[0] + alone[1]


def test_chunk_groups_larger_than_one_spacy_call(nlp):
    # more non-alphabetic chunks than one grouped spaCy call takes, each still tokenized as alone
    chunks = [f"{w}{i}{p}" for i in range(150) for w, p in [("U.S.", ":)"), ("don't", "!")]]
    assert tokenize_chunks(chunks, lowercase=False) == [[t.text for t in nlp(c)] for c in chunks]


# --- long whitespace-free chunks: linear time, ordinary text unchanged -----------------------------------------

# Chunks of up to MAX_CHUNK characters, as long as ordinary text has them (IMDB's longest that is not all
# letters: 91): each keeps exactly the tokens spaCy gives it whole, as before tokenizer version 2.
LONG_ORDINARY = [(base * 9)[:length] for length in (MAX_CHUNK, 91, 64) for base in (
    "https://www.imdb.com/title/tt0111161/reviews?spoiler=hide&sort=helpfulnessScore&dir=desc&ratingFilter=0",
    "well-known-state-of-the-art-so-so-made-for-TV-",
    "!!!", "(((great)))", "...", "wow:-);-):D:P<3:(:-(^_^xD:P", "end.<br/><br/>Start,again.<br/>Yes!!<br/>no...",
    "john.doe+imdb@example.co.uk,me@x.org,you@y.net;them@z.com/us@w.org(him@v.org)[her@u.org]{it@t.org}.",
    "$5.99(or£3,€4.50);10/10,9.5/10,100%", "don't-can't-won't-'cause-rock'n'roll-", "U.S.A.--Dr.Smith's",
)]


def test_chunks_up_to_max_chunk_keep_spacys_tokens(nlp):
    assert all(len(c) <= MAX_CHUNK and not any(ch.isspace() for ch in c) for c in LONG_ORDINARY)
    expected = [[t.text for t in nlp(c)] for c in LONG_ORDINARY]
    assert tokenize_chunks(LONG_ORDINARY, lowercase=False) == expected
    text = " ".join(TRICKY + LONG_ORDINARY)
    assert Tokenizer()(text) == reference(nlp, text)  # <br /> in a chunk is whitespace, as ever


def test_a_longer_chunk_is_split_into_words_and_single_marks_and_an_all_letter_one_stays_whole():
    chunk = "(" * 60 + "Great!" + ")" * 40 + "https://imdb.com/title/tt01?x=a_b"
    assert tokenize_chunks([chunk, "ok"], lowercase=False) == [
        ["("] * 60 + ["Great", "!"] + [")"] * 40 + ["https", ":", "/", "/", "imdb", ".", "com", "/", "title", "/",
                                                    "tt01", "?", "x", "=", "a_b"], ["ok"]]
    assert tokenize_chunks([chunk])[0][60] == "great"
    assert tokenize_chunks(["A" * 5000]) == [["a" * 5000]]
    assert tokenize_chunks(["é😀" * 60]) == [["é", "😀"] * 60]


@pytest.mark.parametrize("kind", ["random", "brackets", "punctuation"])
def test_a_100k_character_chunk_tokenizes_in_under_a_second(kind):
    import random
    import string
    import time

    rng = random.Random(0)
    chunk = {"random": "".join(rng.choice(string.ascii_letters + string.digits + string.punctuation)
                               for _ in range(100_000)),
             "brackets": "".join("(" * 13 + f"{i:03d}" for i in range(6250)),  # every piece distinct
             "punctuation": "!?" * 50_000}[kind]
    tokenize_chunks(["warm-up"])
    start = time.perf_counter()
    tokens = tokenize_chunks([chunk])[0]
    assert time.perf_counter() - start < 1.0  # was minutes: spaCy's affix rules are quadratic in a chunk
    assert "".join(tokens) == chunk.lower()


def test_the_text_pipeline_version_and_its_check():
    assert text_pipeline_version() == {"tokenizer_version": TOKENIZER_VERSION, "token_hash_version": 1}
    check_text_pipeline({}, "run r")  # recorded before versions existed: version 1 of each, read as it is
    check_text_pipeline(text_pipeline_version(), "run r")
    with pytest.raises(SentimentError, match="^model m.onnx was made with tokenizer version 9; this sentiment"):
        check_text_pipeline({"tokenizer_version": 9}, "model m.onnx")


def test_one_spacy_call_takes_a_bounded_number_of_characters():
    # one call holds the GIL throughout: chunks of affixes (~3 ms each at MAX_CHUNK characters) are grouped by
    # characters as well as by count, so no call takes more than about half a second
    from sentiment.data import tokenize as tk

    chunks = ["(" * (MAX_CHUNK - 4) + f"{i:04d}" for i in range(1000)]
    groups = list(tk._groups(list(range(len(chunks))), chunks))
    assert sorted(i for g in groups for i in g) == list(range(len(chunks)))
    assert max(sum(len(chunks[i]) for i in g) for g in groups) < tk._GROUP_CHARS + MAX_CHUNK
    assert len(list(tk._groups(list(range(20_000)), ["a."] * 20_000))) == 3  # short chunks: 8192 a call
