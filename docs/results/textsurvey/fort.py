import sys, re; sys.path.insert(0,"/tmp/textsurvey"); from count import stats
def cookies(paths, sep="\n%\n"):
    for f in paths:
        for c in open(f, encoding="utf-8", errors="replace").read().split(sep):
            lines=[l for l in c.splitlines() if l.strip() and not re.match(r"\s*(--|\t\t)", l)]
            if lines: yield " ".join(lines)
for name, paths in [("bofh-excuses",["debs/x/fortunes-bofh-excuses/usr/share/games/fortunes/bofh-excuses"]),
                    ("anarchism",["debs/x/fortune-anarchism/usr/share/games/fortunes/anarchism"]),
                    ("debian-hints",["debs/x/fortunes-debian-hints/usr/share/games/fortunes/debian-hints"]),
                    ("tfortunes en",["debs/x/tfortunes/usr/share/games/tfortunes/epigrams/en.tfortunes"])]:
    stats(cookies(paths), name, show=3)
