import pytest
from tests.serving.test_app import *  # noqa

def test_probe(client):
    for p in ["/nope-1", "/nope-2"]:
        r = client.get(p); print(p, r.status_code, r.text[:80])
    m = client.get("/metrics"); print(m.status_code, len(m.text), "nope-1" in m.text)
    print([l for l in m.text.splitlines() if "nope" in l][:3])
    for meth in ["TRACE", "POST", "DELETE"]:
        r = client.request(meth, "/healthz"); print(meth, r.status_code, r.text[:60])
    d = client.get("/docs.json"); print(d.status_code, list(d.json().get("paths", {})) if d.status_code == 200 else d.text[:100])
    r = client.post("/predict", content=b'{"customer_ids": ["\\ud800"]}', headers=KEY); print("surrogate", r.status_code, r.text[:100])
    r = client.post("/predict", json={"customer_ids": ["c0001"], "top_k": True}, headers=KEY); print("topk true", r.status_code)
    r = client.post("/predict", json={"customer_ids": ["c0001"], "top_k": "3"}, headers=KEY); print("topk str", r.status_code)
    r = client.post("/predict", content=b'[' * 100000 + b']' * 100000, headers=KEY); print("deep", r.status_code, r.text[:80])
    r = client.post("/predict_features", content=b'{"rows": [{"orders_30d": Infinity}], "models": ["churn"]}', headers=KEY); print("inf", r.status_code, r.text[:100])
    r = client.post("/predict_features", content=b'{"rows": [{"\\ud800": 1}], "models": ["churn"]}', headers=KEY); print("surkey", r.status_code, r.text[:100])
