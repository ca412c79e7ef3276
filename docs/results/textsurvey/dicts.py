import sys, re, gzip; sys.path.insert(0,"/tmp/textsurvey"); from count import stats
def paras(path):
    t = gzip.open(path,"rt",encoding="utf-8",errors="replace").read()
    for p in re.split(r"\n\s*\n", t):
        lines=[l.strip() for l in p.split("\n") if l.startswith((" ","\t"))]
        if lines: yield " ".join(lines)
for n in ["jargon","devil","foldoc"]:
    u=stats(paras(f"debs/x/dict-{n}/usr/share/dictd/{n}.dict.dz"), "dict-"+n, show=5)
    open(f"out_{n}.txt","w").write("\n".join(u))
