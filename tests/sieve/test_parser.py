"""The Sieve parser and checker: pure, table-driven, fuzzed."""
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sieve.compiler import compile_script
from sieve.parser import Command, Number, ParseError, StringList, Tag, parse
from sieve.parser import Test as SyntaxTest

# --- Syntax (RFC 5228 §8) ---------------------------------------------------------------------


def test_it_parses_commands_tests_and_blocks_with_positions():
    script = parse('require "fileinto";\r\nif header :contains "Subject" ["a", "b"] {\r\n  fileinto "X";\r\n}\r\n')
    require, if_ = script.commands
    assert require == Command("require", (StringList(("fileinto",), 1, 9),), (), None, 1, 1)
    assert (if_.name, if_.line, if_.column) == ("if", 2, 1)
    [test] = if_.tests
    assert test == SyntaxTest(
        "header",
        (Tag("contains", 2, 11), StringList(("Subject",), 2, 21), StringList(("a", "b"), 2, 31, bracketed=True)),
        (), 2, 4,
    )
    [fileinto] = if_.block
    assert (fileinto.name, fileinto.line, fileinto.column) == ("fileinto", 3, 3)


@pytest.mark.parametrize(
    "text, expected",
    [
        ('"a\\"b\\\\c\\d"', 'a"b\\cd'),  # RFC 5228 §2.4.2: only \" and \\ are escapes
        ('"two\nlines"', "two\r\nlines"),
        ("text:\nline 1\n..dot\n.\n", "line 1\r\n.dot\r\n"),  # dot-stuffing
        ("text: # comment\r\nx\r\n.\r\n", "x\r\n"),
        ('"${hex:41 42}"', "${hex:41 42}"),  # left alone without encoded-character
    ],
)
def test_it_reads_strings(text, expected):
    [command] = parse(f"x {text};").commands
    assert command.arguments[0].values == (expected,)


@pytest.mark.parametrize("text, value", [("1", 1), ("10K", 10240), ("2m", 2 * 1024**2), ("1G", 1024**3)])
def test_it_reads_numbers_with_quantifiers(text, value):
    [command] = parse(f"x {text};").commands
    assert command.arguments == (Number(value, 1, 3),)


def test_comments_and_case():
    script = parse("# top\nKEEP /* inline\n comment */ ;\n")
    assert [(c.name, c.line) for c in script.commands] == [("keep", 2)]


# --- Errors, with line and column ------------------------------------------------------------

ERRORS = [
    # (script, message, line, column)
    ("keep", "missing ';' after command keep", 1, 5),
    ("if true { keep }", "expected ';' or '{' after the arguments of keep, found '}'", 1, 16),
    ('keep;\n"x";', "expected a command, found a string", 2, 1),
    ('fileinto "x";', 'fileinto needs require "fileinto"', 1, 1),
    ('require "nope";', 'unsupported extension "nope"', 1, 9),
    ('keep;\nrequire "fileinto";', "require must come before any other command", 2, 1),
    ("stop;\nelse { keep; }", "else without a preceding if", 2, 1),
    ("if true { } else { } else { }", "else without a preceding if", 1, 22),
    ('redirect "a@b" "c@d";', "redirect takes 1 positional argument, not 2", 1, 16),
    ("if header :is \"a\" { }", "header takes 2 positional arguments, not 1", 1, 4),
    ("if header :frobnicate \"a\" \"b\" { }", "header has no tag :frobnicate", 1, 11),
    ('if header :is :contains "a" "b" { }', ":contains cannot be used with :is", 1, 15),
    ('require "relational"; if header :value "xx" "a" "b" {}',
     ':value needs one of gt, ge, lt, le, eq, ne, not "xx"', 1, 26),
    ('require "regex"; if header :regex "a" "(" {}', "bad regular expression: missing )", 1, 21),
    ('if header :comparator "i;ascii-numeric" "a" "1" {}', 'comparator "i;ascii-numeric" needs require "comparator-i;ascii-numeric"', 1, 4),
    ('if header :comparator "i;klingon" "a" "1" {}', 'unknown comparator "i;klingon"', 1, 4),
    ('"abc', "unterminated string: no closing '\"'", 1, 1),
    ("keep; /* x", "unterminated comment: /* without */", 1, 7),
    ("text:\nno end", 'unterminated multi-line string: no line with a lone "."', 1, 1),
    ("keep;\n  x = 1;", "unexpected character '='", 2, 5),
    ("if true;", "if needs a block { … }", 1, 1),
    ("keep { }", "keep takes no block; end it with ';'", 1, 1),
    ("if (true) { }", "if needs exactly one test", 1, 1),
    ("if allof true { }", "allof needs a test list in parentheses", 1, 4),
    ("if size 10 { }", "size needs :over or :under", 1, 4),
    ('if address "subject" "x" { }', '"subject" is not a header that holds addresses', 1, 4),
    ('require "vacation"; vacation :days 0 "x";', ":days must be at least 1", 1, 21),
    ('require "variables"; set "a.b" "x";', '"a.b" is not a variable name', 1, 22),
    ('require "include"; include "a/b";', "a script name cannot contain '/'", 1, 20),
    ("frobnicate;", "unknown command frobnicate", 1, 1),
    ("if frob { }", "unknown test frob", 1, 4),
    ("if keep { }", "keep is a command, not a test", 1, 4),
    ("header;", "header is a test, not a command", 1, 1),
    ("x 99999999999999999999999;", "number too large", 1, 3),
    ("x 12abc;", "a number must be followed by a space or punctuation", 1, 5),
    ('x ["a" "b"];', "expected ']' to close the string list, found a string", 1, 8),
    ('require ["index"]; if header :last "a" "b" {}', ":last needs :index", 1, 23),
    ('if envelope "to" "x" { }', 'envelope needs require "envelope"', 1, 4),
    ('require "envelope"; if envelope "bcc" "x" { }', 'unknown envelope part "bcc"', 1, 24),
    ("if " + "not " * 60 + "true {}", "nested more than 48 levels deep", 1, 196),
]


@pytest.mark.parametrize("script, message, line, column", ERRORS)
def test_errors_say_where(script, message, line, column):
    with pytest.raises(ParseError) as caught:
        compile_script(script)
    assert (caught.value.message, caught.value.line, caught.value.column) == (message, line, column)
    assert str(caught.value) == f"line {line}, column {column}: {message}"


def test_invalid_utf8_is_an_error_at_its_place():
    with pytest.raises(ParseError) as caught:
        compile_script(b'keep;\n# caf\xe9\n')
    assert (caught.value.line, caught.value.column) == (2, 6)


def test_every_extension_can_be_required_together():
    from sieve.compiler import EXTENSIONS

    names = ", ".join(f'"{name}"' for name in EXTENSIONS)
    program = compile_script(f"require [{names}];\nkeep;")
    assert program.requires == frozenset(EXTENSIONS)


def test_encoded_characters_are_decoded_when_required():
    program = compile_script('require ["encoded-character", "fileinto"]; fileinto "${hex:41 42}${unicode:e9}";')
    assert program.commands[0].positional == ["ABé"]
    with pytest.raises(ParseError):
        compile_script('require "encoded-character"; keep :flags "${unicode:D800}";')


# --- Never anything but ParseError ------------------------------------------------------------

SIEVE_ALPHABET = st.sampled_from(
    list('require"fileinto";if header :is :contains :matches allof anyof not true { } ( ) [ ] , ; '
         'text:\n.\n# /* */ 10K \\ ${1} "x" keep stop vacation :days redirect set "a" ')
)


@settings(max_examples=400, deadline=None)
@given(st.lists(SIEVE_ALPHABET, max_size=60).map("".join))
def test_fuzz_sieve_like_text_raises_only_parse_error(text):
    try:
        compile_script(text)
    except ParseError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_bytes_raise_only_parse_error(data):
    try:
        compile_script(data)
    except ParseError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=120))
def test_fuzz_text_raises_only_parse_error(text):
    try:
        compile_script(text)
    except ParseError:
        pass
