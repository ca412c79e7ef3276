import sys, re, gzip, collections; sys.path.insert(0,"/tmp/textsurvey"); from count import stats
t = gzip.open("debs/x/dict-gcide/usr/share/dictd/gcide.dict.dz","rt",encoding="utf-8",errors="replace").read()
quotes=[]; cur=[]; src=collections.Counter()
for ln in t.split("\n"):
    if re.match(r" {9,}\S", ln) and not ln.strip().startswith("["):
        cur.append(ln.strip())
    else:
        if cur:
            q=" ".join(cur); tag=ln.strip()
            src[tag[:20]]+=1
            q=re.sub(r"\s*--\s*[A-Z][\w.' ]*\.?$","",q)   # attribution
            q=re.sub(r"--\s*[A-Z][\w.' &]*\.\s*$","",q)
            quotes.append(q); cur=[]
print(len(quotes), src.most_common(6))
u=stats(quotes,"gcide citations",show=12)
open("out_gcide.txt","w").write("\n".join(u))
