mod support;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_weighted_and_header() {
    let v1 = Upstream::start("v1").await;
    let v2 = Upstream::start("v2").await;
    let yaml = format!(
        "{}apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: web\nspec:\n  hosts: [web]\n  http:\n  - match:\n    - headers:\n        x-user-group: {{exact: beta}}\n    route:\n    - destination: {{host: web, subset: v2}}\n  - route:\n    - destination: {{host: web, subset: v1}}\n      weight: 50\n    - destination: {{host: web, subset: v2}}\n      weight: 50\n",
        service_yaml("web", &[("v1", v1.addr), ("v2", v2.addr)])
    );
    let p = TestProxy::start(&yaml).await;
    for proto in [Proto::H1, Proto::H2] {
        let mut c = Client::connect(p.addr, proto).await;
        let r = c
            .request("GET", "web", "/", &[("x-user-group", "beta")])
            .await;
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), "v2");
        let t = tally(&mut c, "web", "/", &[], 200).await;
        assert!(t.get("v1").copied().unwrap_or(0) > 50, "{t:?}");
        assert!(t.get("v2").copied().unwrap_or(0) > 50, "{t:?}");
        let r = c.get("nothing.example", "/").await;
        assert_eq!(r.status, 502);
    }
}
