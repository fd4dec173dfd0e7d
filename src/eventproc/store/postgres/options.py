"""libpq's ``options`` parameter, read into the settings asyncpg sends."""


class UrlError(ValueError):
    """The URL cannot be honoured; the message is one line and never shows the password."""


def server_options(text: str) -> dict[str, str]:
    """libpq's ``options``: ``-c name=value`` and ``--name=value``, space-separated.

    A backslash keeps the next character (a space inside a value). Other
    server command-line switches are refused: asyncpg sends settings, not a
    command line.
    """
    words = _split_options(text)
    settings: dict[str, str] = {}
    index = 0
    while index < len(words):
        word = words[index]
        if word == "-c" and index + 1 < len(words):
            setting, index = words[index + 1], index + 2
        elif len(word) > 2 and word.startswith(("-c", "--")):
            setting, index = word[2:], index + 1
        else:
            raise UrlError(f"options: {word!r} is not supported (only -c name=value settings)")
        key, has_value, value = setting.partition("=")
        if not has_value or not key:
            raise UrlError(f"options: {setting!r} is not name=value")
        settings[key.replace("-", "_")] = value
    return settings


def _split_options(text: str) -> list[str]:
    words: list[str] = []
    current: list[str] = []
    escaped = False
    for char in text:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char.isspace():
            if current:
                words.append("".join(current))
                current = []
        else:
            current.append(char)
    if current:
        words.append("".join(current))
    return words
