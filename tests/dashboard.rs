//! The dashboard (API.md "Dashboard"), in a real browser: Debian's
//! `chromium`, headless, driven through `chromedriver` (WebDriver) with
//! fantoccini, against a gateway on a free port. Walks the provider's team
//! flows (seed/team-account.md) through the UI, saves screenshots at desktop
//! (1280x800) and phone (390x844) width under `target/screenshots/`, and
//! prints the usage page's weight and load time. Without chromium and
//! chromedriver the browser tests skip with a banner, except under CI
//! (`CI` set), where they fail: `.ci/run` installs both.
//!
//! The cookie and headers contract is tested without a browser too.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use fantoccini::{Client, ClientBuilder, Locator};
use reqwest::StatusCode;
use serde_json::{json, Value};

/// Debian's paths; `TOLLGATE_TEST_CHROMIUM` / `TOLLGATE_TEST_CHROMEDRIVER`
/// name others.
fn chromium() -> String {
    std::env::var("TOLLGATE_TEST_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into())
}

fn chromedriver() -> String {
    std::env::var("TOLLGATE_TEST_CHROMEDRIVER").unwrap_or_else(|_| "/usr/bin/chromedriver".into())
}
const PASSWORD: &str = "password123";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// chromedriver on a free port, killed on drop.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// chromedriver, or `None` (with a banner) where the packages are absent.
async fn driver() -> Option<Driver> {
    let (chromium, chromedriver) = (chromium(), chromedriver());
    if !Path::new(&chromium).exists() || !Path::new(&chromedriver).exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must install chromium and chromium-driver (.ci/run)"
        );
        // Straight to stderr: `eprintln!` is captured, and hidden, for
        // tests that pass.
        let _ = writeln!(
            std::io::stderr().lock(),
            "\n==============================================================\n\
             SKIPPED: the dashboard browser tests need {chromium} and {chromedriver}\n\
             (apt-get install chromium chromium-driver)\n\
             ==============================================================\n"
        );
        return None;
    }
    let port = free_port();
    let child = Command::new(&chromedriver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let d = Driver { child, url };
    let http = reqwest::Client::new();
    wait_until("chromedriver answers /status", || {
        let r = http.get(format!("{}/status", d.url)).send();
        async move { r.await.is_ok_and(|r| r.status().is_success()) }
    })
    .await;
    Some(d)
}

/// A fresh headless browser (its own profile: its own cookies).
async fn browser(d: &Driver) -> Client {
    let caps = json!({
        "goog:chromeOptions": {
            "binary": chromium(),
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1280,800",
                     "--hide-scrollbars"],
        }
    });
    let Value::Object(caps) = caps else {
        unreachable!()
    };
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&d.url)
        .await
        .unwrap()
}

fn screenshot_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Screenshots of the page as it is, at desktop and phone width; the page
/// is reloaded at each width so that the charts are drawn for it.
async fn shoot(c: &Client, name: &str, ready: &str) {
    for (w, h, tag) in [(1280, 800, "desktop"), (390, 844, "phone")] {
        c.set_window_size(w, h).await.unwrap();
        c.refresh().await.unwrap();
        find(c, ready).await;
        let png = c.screenshot().await.unwrap();
        std::fs::write(screenshot_dir().join(format!("{name}-{tag}.png")), png).unwrap();
    }
    c.set_window_size(1280, 800).await.unwrap();
}

/// Open a view: a hash route in the page's current document would not
/// reload it, so the page is reloaded after the navigation.
async fn open(c: &Client, url: &str) {
    c.goto(url).await.unwrap();
    c.refresh().await.unwrap();
}

async fn find(c: &Client, css: &str) -> fantoccini::elements::Element {
    c.wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no element {css}: {e}"))
}

/// Wait until the element's text contains `want`; returns the text.
async fn text_of(c: &Client, css: &str, want: &str) -> String {
    let mut last = String::new();
    for _ in 0..400 {
        if let Ok(e) = c.find(Locator::Css(css)).await {
            if let Ok(t) = e.text().await {
                if t.contains(want) {
                    return t;
                }
                last = t;
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{css} never showed {want:?}; last text: {last:?}");
}

async fn absent(c: &Client, css: &str) {
    let n = c.find_all(Locator::Css(css)).await.unwrap().len();
    assert_eq!(n, 0, "{css} must not be on the page");
}

async fn fill(c: &Client, css: &str, value: &str) {
    let e = find(c, css).await;
    e.clear().await.unwrap();
    e.send_keys(value).await.unwrap();
}

async fn click(c: &Client, css: &str) {
    find(c, css).await.click().await.unwrap();
}

/// Sign up through the form at `/#/signup` (already on the page).
async fn sign_up_ui(c: &Client, email: &str) {
    fill(c, "#signup-form input[name=email]", email).await;
    fill(c, "#signup-form input[name=password]", PASSWORD).await;
    click(c, "#signup-form button[type=submit]").await;
}

/// The gateway on a known free port, so that the emailed links
/// (`{public_url}/invites/{token}`) point at it. Another process may take
/// the port between the probe and the bind: then another port.
async fn gateway() -> Gateway {
    for _ in 0..20 {
        let port = free_port();
        let mock = spawn_mock().await;
        let mut config = test_config(&mock.url);
        config.listen = format!("127.0.0.1:{port}").parse().unwrap();
        config.public_url = format!("http://127.0.0.1:{port}");
        let store: std::sync::Arc<dyn tollgate::store::Store> =
            std::sync::Arc::new(tollgate::store::memory::MemoryStore::new());
        let pricing = tollgate::pricing::Pricing::parse(PRICING, "test pricing").unwrap();
        let clock = std::sync::Arc::new(tollgate::clock::ShiftedClock::default());
        match tollgate::server::start_with_clock(config, store.clone(), pricing, clock.clone())
            .await
        {
            Ok(running) => {
                let url = running.url();
                return Gateway {
                    running,
                    clock,
                    mock,
                    api: Api::new(&url),
                    store,
                };
            }
            Err(tollgate::server::ServeError::Bind { .. }) => continue,
            Err(e) => panic!("{e}"),
        }
    }
    panic!("no free port for the gateway");
}

async fn outbox_link(gw: &Gateway, to: &str) -> String {
    let r = gw.get("/api/admin/outbox", Some(OPERATOR)).await;
    assert_eq!(r.status(), StatusCode::OK);
    let all: Value = r.json().await.unwrap();
    all.as_array()
        .unwrap()
        .iter()
        .rev()
        .find(|m| m["to"] == to)
        .and_then(|m| m["link"].as_str())
        .unwrap_or_else(|| panic!("no mail to {to}: {all}"))
        .to_string()
}

/// The Owner: signs up in the browser, is funded by the operator, creates a
/// personal key (shown once), then a team. Returns (user, team id).
async fn owner_creates_team(gw: &Gateway, c: &Client) -> (User, String) {
    c.goto(&format!("{}/#/signup", gw.url)).await.unwrap();
    find(c, "#signup-form").await;
    shoot(c, "01-sign-up", "#signup-form").await;
    sign_up_ui(c, "olivia@example.com").await;
    find(c, "#personal-keys").await;
    let owner = gw.log_in("olivia@example.com").await;
    gw.deposit(&owner, "25.50", "stripe").await;
    c.refresh().await.unwrap();
    let (paid, promo) = gw.balance(&owner).await;
    text_of(c, "#balance-paid", &format!("${paid}")).await;
    text_of(c, "#balance-promo", &format!("${promo}")).await;
    absent(c, "#suspended-warning").await;

    fill(c, "#create-key-form input[name=name]", "laptop").await;
    click(c, "#create-key-form button[type=submit]").await;
    let secret = find(c, "[data-testid=new-secret] input")
        .await
        .prop("value")
        .await
        .unwrap()
        .unwrap();
    assert!(secret.len() > 20, "the key is shown once: {secret}");
    assert!(!c.current_url().await.unwrap().as_str().contains(&secret));
    text_of(c, "#personal-keys-table", "laptop").await;
    // A call with the personal key shows in the personal usage.
    let r = gw.chat(&secret, &chat_body("gpt-4o-mini"), &[]).await;
    assert_eq!(r.status(), StatusCode::OK);
    let (paid, _) = gw.balance(&owner).await;
    c.refresh().await.unwrap();
    text_of(c, "#personal-usage", "Calls\n1").await;
    text_of(c, "#balance-paid", &format!("${paid}")).await;
    absent(c, "[data-testid=new-secret]").await;
    find(c, "#personal-usage figure canvas").await;
    let png = c.screenshot().await.unwrap();
    std::fs::write(screenshot_dir().join("02-account-new-key-desktop.png"), png).unwrap();

    fill(c, "#create-team-form input[name=name]", "Research Lab").await;
    click(c, "#create-team-form button[type=submit]").await;
    find(c, "#members-table").await;
    let team_id = gw.me(&owner).await["owned_team_id"]
        .as_str()
        .unwrap()
        .to_string();
    let balance = gw.team_balance(&team_id, &owner).await;
    assert_eq!(balance, paid, "T3: the paid balance moved");
    text_of(c, "#team-balance", &format!("${balance}")).await;
    // In a team: the personal key is archived, creating one is not offered.
    open(c, &format!("{}/#/", gw.url)).await;
    text_of(c, "#personal-keys-table", "archived").await;
    absent(c, "[data-testid=new-secret]").await;
    assert!(!c.source().await.unwrap().contains(&secret), "shown once");
    absent(c, "#create-key-form").await;
    shoot(c, "03-account-in-team", "#personal-keys-table").await;
    (owner, team_id)
}

/// The Owner invites bob as a member through the form; bob opens the
/// emailed link in his own browser, signs up there and accepts.
async fn invite_and_accept(gw: &Gateway, owner: &Client, bob: &Client, team: &str) {
    open(owner, &format!("{}/#/teams/{team}", gw.url)).await;
    fill(owner, "#invite-form input[name=email]", "bob@example.com").await;
    click(owner, "#invite-form button[type=submit]").await;
    text_of(owner, "#invites-table", "bob@example.com").await;
    let link = outbox_link(gw, "bob@example.com").await;
    assert!(link.starts_with(&format!("{}/invites/", gw.url)), "{link}");

    bob.goto(&link).await.unwrap();
    find(bob, "#signin-form").await;
    shoot(bob, "04-invite-signed-out", "#signin-form").await;
    click(bob, "a[href='#/signup']").await;
    find(bob, "#signup-form").await;
    sign_up_ui(bob, "bob@example.com").await;
    find(bob, "#accept-invite").await;
    shoot(bob, "05-invite-accept", "#accept-invite").await;
    click(bob, "#accept-invite").await;
    text_of(bob, "main h1", "your role: member").await;
    text_of(bob, "#flash", "joined the team as member").await;
}

/// A Member's view: no billing, no invites, no key management, no one
/// else's usage, no delete; leave is offered.
async fn member_view(gw: &Gateway, bob: &Client, team: &str) {
    open(bob, &format!("{}/#/teams/{team}", gw.url)).await;
    text_of(bob, "#members-table", "bob@example.com (you)").await;
    for css in [
        "#team-balance",
        "#invites",
        "#invite-form",
        "#team-key-form",
        "#delete-team",
        "a[href$='/ledger']",
        "#members-table select",
        "#members-table button[aria-label^=Remove]",
    ] {
        absent(bob, css).await;
    }
    find(bob, "#leave-team").await;
    shoot(bob, "06-team-as-member", "#members-table").await;
    open(bob, &format!("{}/#/teams/{team}/usage", gw.url)).await;
    find(bob, "#my-usage").await;
    absent(bob, "#usage-by-member").await;
    absent(bob, "#usage-by-key").await;
}

/// The Owner creates a team key assigned to bob (shown once); the key
/// makes three proxied calls. Returns the key's name.
async fn team_key_and_calls(gw: &Gateway, c: &Client, team: &str) -> String {
    open(c, &format!("{}/#/teams/{team}", gw.url)).await;
    fill(c, "#team-key-form input[name=name]", "bob-notebook").await;
    find(c, "#team-key-form select[name=member_id]")
        .await
        .select_by_label("bob@example.com")
        .await
        .unwrap();
    click(c, "#team-key-form button[type=submit]").await;
    let key = find(c, "[data-testid=new-secret] input")
        .await
        .prop("value")
        .await
        .unwrap()
        .unwrap();
    text_of(c, "#team-keys-table", "bob@example.com").await;
    shoot(c, "07-team-as-owner", "#team-keys-table").await;
    for _ in 0..3 {
        let r = gw.chat(&key, &chat_body("gpt-4o-mini"), &[]).await;
        assert_eq!(r.status(), StatusCode::OK);
    }
    "bob-notebook".to_string()
}

/// The usage page shows the calls by member and by key, with the API's
/// exact spend strings, in the tables and the charts' legends.
async fn usage_shows_calls(gw: &Gateway, c: &Client, owner: &User, team: &str, key_name: &str) {
    let u: Value = gw
        .get(&format!("/api/teams/{team}/usage"), Some(&owner.token))
        .await
        .json()
        .await
        .unwrap();
    let bob = u["by_member"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["email"] == "bob@example.com")
        .unwrap()
        .clone();
    assert_eq!(bob["calls"], 3);
    let key = u["by_key"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == key_name)
        .unwrap()
        .clone();
    assert_eq!(key["calls"], 3);
    open(c, &format!("{}/#/teams/{team}/usage", gw.url)).await;
    let row = text_of(c, "#by-member-table tr[data-row^='bob@']", "$").await;
    assert!(row.contains(" 3 "), "{row}");
    assert!(
        row.contains(&format!("${}", bob["spend"].as_str().unwrap())),
        "{row}"
    );
    let row = text_of(c, &format!("#by-key-table tr[data-row='{key_name}']"), "$").await;
    assert!(
        row.contains(&format!("${}", key["spend"].as_str().unwrap())),
        "{row}"
    );
    find(c, "#usage-by-member figure canvas").await;
    text_of(c, "#usage-by-member .u-legend", "bob@example.com").await;
    text_of(c, "#usage-by-key .u-legend", key_name).await;
    let csv = find(c, "#csv-download")
        .await
        .attr("href")
        .await
        .unwrap()
        .unwrap();
    let r = gw
        .http
        .get(format!("{}{csv}", gw.url))
        .header("cookie", format!("tollgate_session={}", owner.token))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    shoot(c, "08-usage-as-owner", "#by-key-table").await;
}

/// Page weight and load time of the usage page, from a browser with an
/// empty cache: signed in on a page that loads no asset, then the usage
/// page is opened.
async fn measure_usage_page(gw: &Gateway, d: &Driver, owner: &User, team: &str) {
    let c = browser(d).await;
    c.goto(&format!("{}/healthz", gw.url)).await.unwrap();
    // Signed in by a same-origin fetch from a page that loads no asset.
    let status = c
        .execute(
            "return fetch('/api/sessions', {method: 'POST', credentials: 'same-origin',
               headers: {'content-type': 'application/json'},
               body: JSON.stringify({email: arguments[0], password: arguments[1]})})
             .then(r => r.status);",
            vec![json!(owner.email), json!(PASSWORD)],
        )
        .await
        .unwrap();
    assert_eq!(status, 201);
    c.goto(&format!("{}/#/teams/{team}/usage", gw.url))
        .await
        .unwrap();
    find(&c, "#by-key-table").await;
    let m = c
        .execute(
            "const n = performance.getEntriesByType('navigation')[0];
             const a = performance.getEntriesByType('resource')
               .filter(r => r.name.includes('/assets/'));
             const sum = (f) => a.reduce((s, r) => s + r[f], 0);
             return {html: n.encodedBodySize, html_transfer: n.transferSize,
                     assets: sum('encodedBodySize'), assets_transfer: sum('transferSize'),
                     files: a.length, dcl_ms: n.domContentLoadedEventEnd,
                     load_ms: n.loadEventEnd, rendered_ms: performance.now()};",
            vec![],
        )
        .await
        .unwrap();
    let body = m["html"].as_f64().unwrap() + m["assets"].as_f64().unwrap();
    let wire = m["html_transfer"].as_f64().unwrap() + m["assets_transfer"].as_f64().unwrap();
    let _ = writeln!(
        std::io::stderr().lock(),
        "USAGE PAGE WEIGHT: {body} bytes of HTML+JS+CSS bodies ({} asset files), \
         {wire} bytes transferred with headers, cold cache; \
         DOMContentLoaded {:.0} ms, load {:.0} ms, usage tables rendered by {:.0} ms \
         (headless chromium, navigation timing)",
        m["files"],
        m["dcl_ms"].as_f64().unwrap(),
        m["load_ms"].as_f64().unwrap(),
        m["rendered_ms"].as_f64().unwrap()
    );
    assert!(body > 0.0 && m["files"].as_u64().unwrap() >= 8, "{m}");
    c.close().await.unwrap();
}

/// bob leaves from the team page (L1); his assigned key goes with him (L3)
/// and his personal keys come back.
async fn member_leaves(gw: &Gateway, bob: &Client, owner: &Client, team: &str) {
    open(bob, &format!("{}/#/teams/{team}", gw.url)).await;
    click(bob, "#leave-team").await;
    text_of(bob, "#flash", "You left Research Lab").await;
    text_of(bob, "#teams", "You belong to no team").await;
    find(bob, "#create-key-form").await;
    open(owner, &format!("{}/#/teams/{team}", gw.url)).await;
    find(owner, "#members-table").await;
    let members = text_of(owner, "#members-table", "olivia@example.com").await;
    assert!(!members.contains("bob@example.com"), "{members}");
    // L3: the key assigned to bob is deleted (listed so, unusable).
    text_of(
        owner,
        "#team-keys-table tr[data-key='bob-notebook']",
        "deleted",
    )
    .await;
}

/// The Owner's ledger page, then delete with the confirmation that states
/// the refund; the refund lands in the personal paid balance.
async fn ledger_and_delete(gw: &Gateway, c: &Client, owner: &User, team: &str) {
    open(c, &format!("{}/#/teams/{team}/ledger", gw.url)).await;
    text_of(c, "#ledger-table", "settlement").await;
    shoot(c, "09-ledger-as-owner", "#ledger-table").await;
    let balance = gw.team_balance(team, owner).await;
    open(c, &format!("{}/#/teams/{team}", gw.url)).await;
    click(c, "#delete-team-button").await;
    let ask = text_of(c, "#delete-team [role=alertdialog]", "refunded").await;
    assert!(ask.contains(&format!("${balance}")), "{ask}");
    let png = c.screenshot().await.unwrap();
    std::fs::write(screenshot_dir().join("10-delete-confirm-desktop.png"), png).unwrap();
    click(c, "#confirm-delete").await;
    text_of(
        c,
        "#flash",
        &format!("Refunded to your personal paid balance: ${balance}"),
    )
    .await;
    text_of(c, "#balance-paid", &format!("${balance}")).await;
    assert_eq!(gw.balance(owner).await.0, balance);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_page_flows_end_to_end_in_a_browser() {
    let Some(d) = driver().await else { return };
    let gw = gateway().await;
    let owner_c = browser(&d).await;
    let bob_c = browser(&d).await;
    let (owner, team) = owner_creates_team(&gw, &owner_c).await;
    let cookie = owner_c.get_named_cookie("tollgate_session").await.unwrap();
    assert_eq!(cookie.http_only(), Some(true));
    assert_eq!(format!("{:?}", cookie.same_site()), "Some(Strict)");

    invite_and_accept(&gw, &owner_c, &bob_c, &team).await;
    member_view(&gw, &bob_c, &team).await;
    let key_name = team_key_and_calls(&gw, &owner_c, &team).await;
    usage_shows_calls(&gw, &owner_c, &owner, &team, &key_name).await;
    // The Member's own usage: his calls, no one else's.
    open(&bob_c, &format!("{}/#/teams/{team}/usage", gw.url)).await;
    text_of(&bob_c, "#my-usage", "Calls\n3").await;
    shoot(&bob_c, "11-usage-as-member", "#my-usage").await;
    measure_usage_page(&gw, &d, &owner, &team).await;
    member_leaves(&gw, &bob_c, &owner_c, &team).await;
    ledger_and_delete(&gw, &owner_c, &owner, &team).await;
    owner_c.close().await.unwrap();
    bob_c.close().await.unwrap();
    gw.running.stop().await.unwrap();
}

/// Sign-out in the browser clears the cookie and ends the session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_and_out_in_a_browser() {
    let Some(d) = driver().await else { return };
    let gw = gateway().await;
    gw.user("sam@example.com").await;
    let c = browser(&d).await;
    c.goto(&format!("{}/", gw.url)).await.unwrap();
    find(&c, "#signin-form").await;
    shoot(&c, "00-sign-in", "#signin-form").await;
    fill(&c, "#signin-form input[name=email]", "sam@example.com").await;
    fill(&c, "#signin-form input[name=password]", "wrong-password").await;
    click(&c, "#signin-form button[type=submit]").await;
    text_of(&c, "#flash .error", "").await;
    fill(&c, "#signin-form input[name=password]", PASSWORD).await;
    click(&c, "#signin-form button[type=submit]").await;
    find(&c, "#balance").await;
    let token = c.get_named_cookie("tollgate_session").await.unwrap();
    let token = token.value().to_string();
    let me: Value = gw.get("/api/me", Some(&token)).await.json().await.unwrap();
    // No money: the API says suspended, the page warns.
    assert_eq!(me["suspended"], true, "{me}");
    text_of(&c, "#suspended-warning", "suspension threshold").await;
    shoot(&c, "14-account-suspended", "#suspended-warning").await;
    click(&c, "#sign-out").await;
    find(&c, "#signin-form").await;
    assert!(c.get_named_cookie("tollgate_session").await.is_err());
    assert_eq!(
        gw.get("/api/me", Some(&token)).await.status(),
        StatusCode::UNAUTHORIZED,
        "sign-out ends the session, not only the cookie"
    );
    c.close().await.unwrap();
}

// ---- without a browser: the cookie and the headers ----

fn set_cookie(r: &reqwest::Response) -> String {
    r.headers()["set-cookie"].to_str().unwrap().to_string()
}

#[tokio::test]
async fn log_in_sets_the_session_cookie_and_the_api_accepts_it() {
    let gw = spawn_gateway().await;
    let u = gw.user("cara@example.com").await;
    let r = gw
        .post(
            "/api/sessions",
            None,
            &json!({"email": u.email, "password": PASSWORD}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let cookie = set_cookie(&r);
    let body: Value = r.json().await.unwrap();
    // The JSON answer is unchanged for API clients.
    let token = body["token"].as_str().unwrap();
    assert!(body["expires_at"].is_string());
    assert!(
        cookie.starts_with(&format!("tollgate_session={token};")),
        "{cookie}"
    );
    for part in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age="] {
        assert!(cookie.contains(part), "{cookie}");
    }
    assert!(!cookie.contains("Secure"), "http:// public_url: {cookie}");
    let me = gw
        .http
        .get(format!("{}/api/me", gw.url))
        .header("cookie", format!("other=1; tollgate_session={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), StatusCode::OK);
    assert_eq!(
        me.json::<Value>().await.unwrap()["email"],
        "cara@example.com"
    );
    // A wrong cookie is no session; the operator is never a cookie.
    let bad = gw
        .http
        .get(format!("{}/api/me", gw.url))
        .header("cookie", "tollgate_session=tgs_nope")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::UNAUTHORIZED);
    let op = gw
        .http
        .get(format!("{}/api/admin/outbox", gw.url))
        .header("cookie", format!("tollgate_session={OPERATOR}"))
        .send()
        .await
        .unwrap();
    assert_eq!(op.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn sign_out_ends_the_session_and_clears_the_cookie() {
    let gw = spawn_gateway().await;
    let u = gw.user("dan@example.com").await;
    let out = gw
        .http
        .delete(format!("{}/api/sessions", gw.url))
        .header("cookie", format!("tollgate_session={}", u.token))
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), StatusCode::NO_CONTENT);
    let cleared = set_cookie(&out);
    assert!(
        cleared.starts_with("tollgate_session=;") && cleared.contains("Max-Age=0"),
        "{cleared}"
    );
    assert_eq!(
        gw.get("/api/me", Some(&u.token)).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let again = gw.delete("/api/sessions", Some(&u.token)).await;
    assert_eq!(again.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn https_public_url_marks_the_cookie_secure() {
    let gw = spawn_gateway_with(|c| c.public_url = "https://gw.example.com".into()).await;
    let u = gw.user("eve@example.com").await;
    let r = gw
        .post(
            "/api/sessions",
            None,
            &json!({"email": u.email, "password": PASSWORD}),
        )
        .await;
    assert!(set_cookie(&r).contains("; Secure"), "{}", set_cookie(&r));
}

#[tokio::test]
async fn pages_carry_a_csp_without_inline_script_and_assets_are_compiled_in() {
    let gw = spawn_gateway().await;
    for path in ["/", "/invites/some-token"] {
        let r = gw.get(path, None).await;
        assert_eq!(r.status(), StatusCode::OK);
        let csp = r.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(
            csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
            "{csp}"
        );
        assert_eq!(r.headers()["referrer-policy"], "no-referrer");
        let html = r.text().await.unwrap();
        // Every script is a file: no inline script, no inline handler.
        for tag in html.split("<script").skip(1) {
            assert!(tag.contains("src=\"/assets/"), "inline script: {tag}");
        }
        assert!(
            !html.contains(" onclick=") && !html.contains("http://") && !html.contains("https://")
        );
    }
    for (asset, ty) in [
        ("/assets/js/app.js", "text/javascript"),
        ("/assets/js/chart.js", "text/javascript"),
        ("/assets/app.css", "text/css"),
        (
            "/assets/vendor/uplot-1.6.32/uPlot.iife.min.js",
            "text/javascript",
        ),
    ] {
        let r = gw.get(asset, None).await;
        assert_eq!(r.status(), StatusCode::OK, "{asset}");
        assert!(r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with(ty));
    }
    // Every module in static/js/ is compiled in (a missing one breaks the page).
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("static/js");
    for f in std::fs::read_dir(dir).unwrap() {
        let name = f.unwrap().file_name().into_string().unwrap();
        let r = gw.get(&format!("/assets/js/{name}"), None).await;
        assert_eq!(r.status(), StatusCode::OK, "static/js/{name} is not served");
    }
    assert_eq!(
        gw.get("/assets/nope.js", None).await.status(),
        StatusCode::NOT_FOUND
    );
}

// ---- roles: the Owner's controls, an Admin's view ----

async fn sign_in_ui(gw: &Gateway, c: &Client, email: &str) {
    c.goto(&format!("{}/#/signin", gw.url)).await.unwrap();
    fill(c, "#signin-form input[name=email]", email).await;
    fill(c, "#signin-form input[name=password]", PASSWORD).await;
    click(c, "#signin-form button[type=submit]").await;
    find(c, "#balance").await;
}

async fn member_json(gw: &Gateway, team: &str, by: &User, email: &str) -> Value {
    let all: Value = gw
        .get(&format!("/api/teams/{team}/members"), Some(&by.token))
        .await
        .json()
        .await
        .unwrap();
    all.as_array()
        .unwrap()
        .iter()
        .find(|m| m["email"] == email)
        .cloned()
        .unwrap_or(Value::Null)
}

/// The Owner changes a role, invites as admin and revokes, and sets a
/// member's spend limit, all through the page.
async fn owner_controls(gw: &Gateway, c: &Client, owner: &User, team: &str) {
    open(c, &format!("{}/#/teams/{team}", gw.url)).await;
    let row = "#members-table tr[data-member='max@example.com']";
    find(c, &format!("{row} select"))
        .await
        .select_by_value("admin")
        .await
        .unwrap();
    click(c, &format!("{row} button.secondary")).await;
    text_of(c, "#flash", "max@example.com is now admin").await;
    assert_eq!(
        member_json(gw, team, owner, "max@example.com").await["role"],
        "admin"
    );
    find(c, &format!("{row} select"))
        .await
        .select_by_value("member")
        .await
        .unwrap();
    click(c, &format!("{row} button.secondary")).await;
    text_of(c, "#flash", "max@example.com is now member").await;

    fill(c, "#invite-form input[name=email]", "ivy@example.com").await;
    find(c, "#invite-form select[name=role]")
        .await
        .select_by_value("admin")
        .await
        .unwrap();
    click(c, "#invite-form button[type=submit]").await;
    text_of(c, "#invites-table", "admin").await;
    click(c, "#invites-table button[aria-label$='ivy@example.com']").await;
    text_of(c, "#invites", "No pending invites").await;

    let max_row = find(c, row).await;
    max_row
        .find(Locator::Css("summary"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let f = max_row.find(Locator::Css("form")).await.unwrap();
    let spend = f
        .find(Locator::Css("input[name=spend_limit]"))
        .await
        .unwrap();
    spend.send_keys("5.25").await.unwrap();
    f.find(Locator::Css("select[name=period]"))
        .await
        .unwrap()
        .select_by_value("week")
        .await
        .unwrap();
    f.find(Locator::Css("button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    text_of(c, row, "per week").await;
    let limits = &member_json(gw, team, owner, "max@example.com").await["limits"];
    assert_eq!(limits["period"], "week", "{limits}");
    assert_eq!(
        nanos(limits["spend_limit"].as_str().unwrap()),
        nanos("5.25")
    );
    shoot(c, "12-team-as-owner-roles", "#members-table").await;
}

/// An Admin: no billing, no role changes, invites as member only, removes
/// a Member but not the Owner, sees the team's usage.
async fn admin_view(gw: &Gateway, c: &Client, owner: &User, team: &str) {
    open(c, &format!("{}/#/teams/{team}", gw.url)).await;
    text_of(c, "main h1", "your role: admin").await;
    for css in [
        "#team-balance",
        "#delete-team",
        "a[href$='/ledger']",
        "#members-table select[data-role-for]",
        "#invite-form select",
        "#members-table tr[data-member='olivia@example.com'] button",
    ] {
        absent(c, css).await;
    }
    find(c, "#invite-form").await;
    find(c, "#team-key-form").await;
    shoot(c, "13-team-as-admin", "#members-table").await;
    click(c, "button[aria-label='Remove max@example.com']").await;
    text_of(c, "#flash", "max@example.com removed").await;
    assert!(member_json(gw, team, owner, "max@example.com")
        .await
        .is_null());
    open(c, &format!("{}/#/teams/{team}/usage", gw.url)).await;
    find(c, "#usage-by-member").await;
    find(c, "#usage-by-key").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_invites_and_limits_in_a_browser() {
    let Some(d) = driver().await else { return };
    let gw = gateway().await;
    let owner = gw.user("olivia@example.com").await;
    gw.deposit(&owner, "3", "stripe").await;
    let team = gw.team(&owner, "Roles & Co").await;
    let ada = gw.user("ada@example.com").await;
    let max = gw.user("max@example.com").await;
    gw.join(&team, &owner, &ada, "admin").await;
    gw.join(&team, &owner, &max, "member").await;
    let owner_c = browser(&d).await;
    sign_in_ui(&gw, &owner_c, "olivia@example.com").await;
    owner_controls(&gw, &owner_c, &owner, &team).await;
    let ada_c = browser(&d).await;
    sign_in_ui(&gw, &ada_c, "ada@example.com").await;
    admin_view(&gw, &ada_c, &owner, &team).await;
    owner_c.close().await.unwrap();
    ada_c.close().await.unwrap();
}
