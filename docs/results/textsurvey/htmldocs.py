import sys, re, glob, gzip; sys.path.insert(0,"/tmp/textsurvey"); from count import stats
from html.parser import HTMLParser
class P(HTMLParser):
    def __init__(s): super().__init__(); s.out=[]; s.buf=None; s.skip=0
    def handle_starttag(s,t,a):
        if t in ("pre","code","script","style","kbd","tt","samp"): s.skip+=1
        if t in ("p","li","dd","td") or (t=="div" and ("class","para") in a): s.flush(); s.buf=[]
    def handle_endtag(s,t):
        if t in ("pre","code","script","style","kbd","tt","samp"): s.skip=max(0,s.skip-1); 
        if t in ("p","li","dd","td","div"): s.flush()
    def handle_data(s,d):
        if s.buf is not None:
            s.buf.append(d if not s.skip else " CODE ")   # code inside a sentence makes it unclean
    def flush(s):
        if s.buf: s.out.append(" ".join("".join(s.buf).split()))
        s.buf=None
def paras(files):
    for f in files:
        p=P(); p.feed(open(f,encoding="utf-8",errors="replace").read()); p.flush(); yield from p.out
sets={
 "debian-handbook (en-US)": glob.glob("debs/x/debian-handbook/usr/share/doc/debian-handbook/html/en-US/*.html")}
xx={
 "debian-handbook (en-US)": glob.glob("debs/x/debian-handbook/usr/share/doc/debian-handbook/html/en-US/*.html"),
 "debian-reference-en": glob.glob("debs/x/debian-reference-en/usr/share/debian-reference/*.en.html")+glob.glob("debs/x/debian-reference-en/usr/share/doc/debian-reference-en/**/*.html",recursive=True),
 "python3.11-doc": glob.glob("debs/x/python3.11-doc/usr/share/doc/python3.11/html/**/*.html",recursive=True),
 "debian-faq": glob.glob("debs/x/debian-faq/**/*.html",recursive=True),
 "gnu-standards": glob.glob("debs/x/gnu-standards/**/*.html",recursive=True),
}
for k,v in sets.items():
    u=stats(paras(sorted(set(v))), f"{k} [{len(set(v))} files]", show=4)
    u=[s for s in u if "CODE" not in s]
    print("   without inline code:", len(u), sum(len(s.split()) for s in u))
    open("out_"+k.split()[0]+".txt","w").write("\n".join(u))
