#!/usr/bin/env python3
"""Man pages for `baton` and each of its commands, from swift-argument-parser's help dump
(`baton --experimental-dump-help`): baton.1 and baton-<command>.1 (nested: baton-consul-serve.1).

    manpages.py HELP.json VERSION OUTDIR
"""
import json
import sys
from datetime import date


def roff(text):
    """Escapes text for roff: backslashes, and a leading dot or quote."""
    text = (text or "").replace("\\", "\\\\").replace("-", "\\-")
    lines = []
    for line in text.splitlines() or [""]:
        lines.append("\\&" + line if line[:1] in (".", "'") else line)
    return "\n".join(lines)


def synopsis_name(argument):
    name = argument.get("preferredName") or (argument.get("names") or [None])[0]
    if argument["kind"] == "positional" or name is None:
        return "<" + argument.get("valueName", "value") + ">"
    dash = "--" if name["kind"] == "long" else "-"
    flag = dash + name["name"]
    if argument["kind"] == "option":
        flag += " <" + argument.get("valueName", "value") + ">"
    return flag


def page(command, path, version, out):
    name = "-".join(path)
    shown = " ".join(path)
    arguments = [a for a in command.get("arguments", []) if a.get("shouldDisplay", True)]
    subcommands = [s for s in command.get("subcommands", []) if s.get("shouldDisplay", True) and s["commandName"] != "help"]
    lines = [
        '.TH "%s" 1 "%s" "baton %s" "Baton manual"' % (name.upper(), date.today().isoformat(), version),
        ".SH NAME",
        "%s \\- %s" % (roff(name), roff(command.get("abstract", ""))),
        ".SH SYNOPSIS",
        ".B %s" % roff(shown),
    ]
    for a in arguments:
        text = roff(synopsis_name(a))
        lines.append(text if not a.get("isOptional") else "[" + text + "]")
    if subcommands:
        lines.append("<command>")
    if command.get("discussion"):
        lines += [".SH DESCRIPTION", roff(command["discussion"])]
    if arguments:
        lines.append(".SH OPTIONS")
        for a in arguments:
            names = ", ".join(("--" if n["kind"] == "long" else "-") + n["name"] for n in a.get("names", [])) or synopsis_name(a)
            lines += [".TP", "\\fB%s\\fR%s" % (roff(names), " \\fI<%s>\\fR" % roff(a["valueName"]) if a["kind"] == "option" else "")]
            text = a.get("abstract", "")
            if a.get("defaultValue"):
                text += " (default: %s)" % a["defaultValue"]
            lines.append(roff(text))
            if a.get("discussion"):
                lines += [".IP", roff(a["discussion"])]
    if subcommands:
        lines.append(".SH COMMANDS")
        for s in subcommands:
            lines += [".TP", "\\fB%s\\fR" % roff(s["commandName"]), roff(s.get("abstract", ""))]
    lines += [".SH SEE ALSO", ", ".join("\\fB%s\\fR(1)" % roff("-".join(path + [s["commandName"]])) for s in subcommands) or "\\fBbaton\\fR(1)",
              "and /usr/share/doc/baton/README.md"]
    with open("%s/%s.1" % (out, name), "w") as f:
        f.write("\n".join(lines) + "\n")
    for s in subcommands:
        page(s, path + [s["commandName"]], version, out)


def main():
    if len(sys.argv) != 4:
        sys.exit("usage: manpages.py HELP.json VERSION OUTDIR")
    with open(sys.argv[1]) as f:
        dump = json.load(f)
    page(dump["command"], [dump["command"]["commandName"]], sys.argv[2], sys.argv[3])


if __name__ == "__main__":
    main()
