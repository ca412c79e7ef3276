import sys, re, glob; sys.path.insert(0,"/tmp/textsurvey"); from count import stats
import count
def detok(line):
    toks=[t.rsplit("/",1)[0] for t in line.split()]
    s=" ".join(toks)
    s=s.replace("``",'"').replace("''",'"')
    s=re.sub(r" ([.,;:!?)])",r"\1",s); s=re.sub(r"\( ",r"(",s)
    s=re.sub(r'" (.*?) "', r'"\1"', s)
    s=re.sub(r" (n't|'s|'re|'ll|'ve|'d|'m)\b",r"\1",s)
    return s
sents=[]
for f in sorted(glob.glob("npm/brown/package/c[a-r][0-9][0-9]")):
    for ln in open(f):
        if ln.strip(): sents.append(detok(ln))
print("lines", len(sents))
# Brown lines are already sentences: count directly without re-splitting
kept=[s for s in sents if 5<=len(s.split())<=40 and count.CLEAN.fullmatch(s.translate(count.TR))]
u=list(dict.fromkeys(kept)); print("brown clean 5-40w", len(kept), "unique", len(u), "words", sum(len(s.split()) for s in u))
import random; [print("   |",s) for s in random.Random(2).sample(u,8)]
open("out_brown.txt","w").write("\n".join(u))
