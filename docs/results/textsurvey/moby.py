import glob, re, sys
sys.path.insert(0, "/tmp/textsurvey"); from count import stats
def paras():
    for f in glob.glob("npm/stdlib/package/moby-dick/data/[ce][hp]*.txt")+glob.glob("npm/stdlib/package/moby-dick/data/extracts.txt"):
        t = open(f).read()
        for p in re.split(r"\n\s*\n", t): yield p
stats(paras(), "moby-dick", show=6)
