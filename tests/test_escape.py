"""The escaping layer: round trips through systemd's word-splitting rules, and refusals."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from osunits.render import UnescapedValue, _finalize
from osunits.systemd import escape
from osunits.systemd.words import split_exec, split_words, unescape_specifiers

# Anything printable on one line, including quotes, backslashes, % and $.
line_text = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=40)
words = st.lists(line_text, min_size=1, max_size=6)


@given(st.lists(line_text, min_size=0, max_size=6))
def test_exec_line_round_trip(args: list[str]) -> None:
    argv = ["/usr/bin/prog", *args]
    assert split_exec(escape.exec_line(argv)) == argv


@given(line_text)
def test_exec_word_escapes_specifiers_and_variables(word: str) -> None:
    out = escape.exec_word(word)
    # no lone % or $ survives: systemd would expand it
    assert "%" not in out.replace("%%", "")
    assert "$" not in out.replace("$$", "")


@given(words)
def test_nspawn_words_round_trip(ws: list[str]) -> None:
    assert split_words(escape.nspawn_words(ws), cunescape=False) == ws


@given(st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,10}", fullmatch=True), line_text)
def test_unit_environment_round_trip(key: str, value: str) -> None:
    out = escape.unit_environment(key, value)
    (word,) = split_words(out, cunescape=True)
    assert unescape_specifiers(word) == f"{key}={value}"


@given(line_text.filter(lambda s: s == s.strip() and not s.endswith("\\")))
def test_unit_value_round_trip(s: str) -> None:
    assert unescape_specifiers(escape.unit_value(s)) == s


@pytest.mark.parametrize("bad", ["a\nb", "a\rb", "a\0b"])
def test_newlines_are_refused_everywhere(bad: str) -> None:
    for fn in (escape.unit_value, escape.exec_word, escape.nspawn_word, escape.nspawn_value):
        with pytest.raises(escape.EscapeError):
            fn(bad)
    with pytest.raises(escape.EscapeError):
        escape.unit_environment("K", bad)


def test_specific_escapes() -> None:
    assert escape.unit_value("100% of %n") == "100%% of %%n"
    assert escape.exec_line(["/bin/echo", "$HOME", "a b", "%i"]) == '/bin/echo "$$HOME" "a b" %%i'
    assert escape.exec_line(["/bin/echo", "-n"]) == "/bin/echo -n"
    assert escape.nspawn_word("a b") == '"a b"'
    assert escape.nspawn_word('say "hi"') == "'say \"hi\"'"
    assert escape.nspawn_word("it's \"x\"") == '"it\'s "\'"x"\''
    assert escape.nspawn_word("") == '""'
    with pytest.raises(escape.EscapeError):
        escape.exec_line(["relative/prog"])
    with pytest.raises(escape.EscapeError):
        escape.unit_value("ends in \\")
    with pytest.raises(escape.EscapeError):
        escape.nspawn_bind("/a:b", "/c")
    assert escape.unit_name_escape("a/b c") == "a-b\\x20c"


def test_templates_cannot_print_unescaped_values() -> None:
    assert _finalize(escape.Escaped("x")) == "x"
    with pytest.raises(UnescapedValue):
        _finalize("raw")
    with pytest.raises(UnescapedValue):
        _finalize(5)


def test_unit_names() -> None:
    from osunits.systemd.units import service_of, unit_of

    assert unit_of("keystone") == "systemd-nspawn@keystone.service"
    assert service_of(unit_of("keystone")) == "keystone"
    for unit in ("openstack.target", "osunits-publish-a-80.socket", "x.service", "m.mount"):
        assert unit_of(unit) == unit and service_of(unit) == unit
