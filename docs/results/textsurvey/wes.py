import sys, re, glob; sys.path.insert(0,"/tmp/textsurvey"); from count import stats
msgs=[]; story=[]
for f in glob.glob("debs/wes/**/*.cfg", recursive=True):
    t=open(f,encoding="utf-8",errors="replace").read()
    for key, m in re.findall(r'\b(message|story|description)\s*=\s*_\s*"((?:[^"]|"")*)"', t):
        m=m.replace('""','"'); m=re.sub(r"<[^>]+>|\$\w+(\.\w+)*\|?","",m)
        (msgs if key=="message" else story).append(m)
u=stats(msgs,"wesnoth campaign dialogue (message=)",show=10)
open("out_wesnoth.txt","w").write("\n".join(u))
stats(story,"wesnoth story/description",show=3)
