//! The web site end to end in headless Chromium, over WebDriver (chromedriver): an organizer
//! creates and publishes a conference; a registrant orders, sees the price, enters details,
//! pays, sees the access code and assigns a seat; a second registrant asks for more seats than
//! remain and sees how many can be had.
//!
//! Screenshots of every page go to `target/tmp/browser/` (and `failure.png` when a step fails).
//! Without `chromedriver` the test is skipped with a notice, unless `CONFERENCE_TEST_BROWSER`
//! is `required` (as in CI, which installs Debian's `chromium` and `chromium-driver`).

mod support;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;
use support::{TOKEN, sqlite};

type Step<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn chromedriver() -> Option<PathBuf> {
    let path = std::env::var_os("CHROMEDRIVER")
        .map_or_else(|| PathBuf::from("/usr/bin/chromedriver"), PathBuf::from);
    if path.exists() {
        return Some(path);
    }
    assert!(
        std::env::var("CONFERENCE_TEST_BROWSER").as_deref() != Ok("required"),
        "CONFERENCE_TEST_BROWSER=required but there is no chromedriver at {}",
        path.display()
    );
    eprintln!(
        "notice: no chromedriver at {} (apt install chromium chromium-driver); browser test skipped",
        path.display()
    );
    None
}

/// chromedriver on a free port, killed when dropped.
struct Driver {
    child: std::process::Child,
    port: u16,
}

impl Driver {
    async fn start(path: &PathBuf) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = std::process::Command::new(path)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self { child, port }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Browser {
    client: Client,
    base: String,
    shots: PathBuf,
    taken: usize,
}

impl Browser {
    async fn goto(&self, path: &str) -> Step<()> {
        Ok(self.client.goto(&format!("{}{path}", self.base)).await?)
    }

    /// Waits (up to 20 s, through the pages' self-refreshes) for the element `css`.
    async fn find(&self, css: &str) -> Step<fantoccini::elements::Element> {
        Ok(self
            .client
            .wait()
            .at_most(Duration::from_secs(20))
            .for_element(Locator::Css(css))
            .await?)
    }

    async fn text(&self, css: &str) -> Step<String> {
        Ok(self.find(css).await?.text().await?)
    }

    async fn fill(&self, css: &str, value: &str) -> Step<()> {
        let field = self.find(css).await?;
        field.clear().await?;
        field.send_keys(value).await?;
        Ok(())
    }

    /// Sets a field through the DOM (date inputs take typed keys in the locale's order).
    async fn set(&self, id: &str, value: &str) -> Step<()> {
        self.client
            .execute(
                "document.getElementById(arguments[0]).value = arguments[1];",
                vec![json!(id), json!(value)],
            )
            .await?;
        Ok(())
    }

    async fn click(&self, css: &str) -> Step<()> {
        self.find(css).await?.click().await?;
        Ok(())
    }

    async fn shot(&mut self, name: &str) -> Step<()> {
        self.taken += 1;
        let png = self.client.screenshot().await?;
        std::fs::write(self.shots.join(format!("{:02}-{name}.png", self.taken)), png)?;
        Ok(())
    }
}

async fn organizer(b: &mut Browser) -> Step<String> {
    b.goto("/admin").await?;
    b.shot("admin-sign-in").await?;
    b.fill("#token", "wrong").await?;
    b.click("#sign-in button").await?;
    assert!(
        b.text("#form-error").await?.contains("token"),
        "a wrong token is refused"
    );
    b.fill("#token", TOKEN).await?;
    b.click("#sign-in button").await?;

    // A form with an error first: it comes back with the message beside the field.
    b.fill("#conference-name", "BrowserConf").await?;
    b.click("#create-conference").await?;
    b.find("#error-code").await?;
    b.shot("admin-new-conference-errors").await?;
    for (id, value) in [
        ("#conference-code", "browserconf"),
        ("#conference-description", "A conference seen through a browser"),
        ("#conference-location", "Lyon"),
        ("#conference-tagline", "Click by click"),
        ("#conference-owner_name", "Ferris"),
        ("#conference-owner_email", "ferris@example.org"),
    ] {
        b.fill(id, value).await?;
    }
    b.set("conference-start_date", "2027-05-10").await?;
    b.set("conference-end_date", "2027-05-12").await?;
    b.click("#create-conference").await?;

    b.find("#new-seat-type").await?;
    b.fill("#seat-name", "Full pass").await?;
    b.fill("#seat-description", "Both days").await?;
    b.fill("#seat-price", "150").await?;
    b.fill("#seat-quantity", "3").await?;
    b.click("#add-seat-type").await?;
    b.find("form.seat-type input[value='Full pass']").await?;
    b.click("#publish").await?;
    b.find("#unpublish").await?;
    assert!(b.text("#published").await?.starts_with("Published"));
    b.shot("admin-conference-published").await?;
    Ok("browserconf".to_owned())
}

async fn registrant(b: &mut Browser, code: &str) -> Step<()> {
    b.goto("/").await?;
    b.click(&format!("a[href='/conferences/{code}']")).await?;
    let quantity = b.find("input[data-seat-type='Full pass']").await?;
    b.shot("register").await?;
    quantity.send_keys("2").await?;
    b.click("#place-order").await?;

    // Checkout: the price, then the registrant with an invalid email first.
    b.find("#countdown").await?;
    assert_eq!(b.text("#total").await?, "300.00");
    b.shot("checkout").await?;
    b.fill("#first_name", "Ada").await?;
    b.fill("#last_name", "Lovelace").await?;
    b.fill("#email", "not-an-email").await?;
    b.click("#continue").await?;
    b.find("#error-email").await?;
    b.shot("checkout-field-error").await?;
    b.fill("#email", "ada@example.org").await?;
    b.click("#continue").await?;

    b.find("#accept").await?;
    b.shot("payment").await?;
    b.click("#accept").await?;

    let access_code = b.text("#access-code").await?;
    assert_eq!(access_code.len(), 6, "an access code: {access_code}");
    b.shot("success").await?;
    b.click("#assign-seats").await?;

    b.find("#seat-0").await?;
    b.shot("seats").await?;
    b.fill("#seat-0 input[name=first_name]", "Grace").await?;
    b.fill("#seat-0 input[name=last_name]", "Hopper").await?;
    b.fill("#seat-0 input[name=email]", "grace@example.org").await?;
    b.click("#seat-0 button").await?;
    b.find("#saved-0").await?;
    assert_eq!(
        b.find("#seat-0 input[name=email]")
            .await?
            .prop("value")
            .await?
            .as_deref(),
        Some("grace@example.org")
    );
    b.shot("seat-assigned").await?;

    // Find my order, with the access code from the success page.
    b.goto("/find").await?;
    b.fill("#find input[name=email]", "ada@example.org").await?;
    b.fill("#find input[name=access_code]", &access_code).await?;
    b.click("#find button").await?;
    assert_eq!(b.text("#access-code").await?, access_code);
    Ok(())
}

async fn second_registrant(b: &mut Browser, code: &str) -> Step<()> {
    b.goto(&format!("/conferences/{code}")).await?;
    let quantity = b.find("input[data-seat-type='Full pass']").await?;
    quantity.send_keys("3").await?;
    b.click("#place-order").await?;
    let available = b.text(".available").await?;
    assert_eq!(available, "Only 1 available");
    assert!(b.text("#form-error").await?.contains("Not enough seats"));
    b.shot("not-enough-seats").await?;
    Ok(())
}

async fn scenario(b: &mut Browser) -> Step<()> {
    let code = organizer(b).await?;
    registrant(b, &code).await?;
    second_registrant(b, &code).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_in_a_real_browser() {
    let Some(driver_path) = chromedriver() else { return };
    let h = sqlite().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(axum::serve(listener, h.router.clone()).into_future());

    let driver = Driver::start(&driver_path).await;
    let capabilities = json!({
        "goog:chromeOptions": {
            "binary": std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned()),
            "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                     "--disable-dev-shm-usage", "--window-size=1200,1000"],
        }
    });
    let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(capabilities.as_object().unwrap().clone())
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .expect("a browser session");
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("browser");
    let _ = std::fs::remove_dir_all(&shots);
    std::fs::create_dir_all(&shots).unwrap();
    let mut browser = Browser {
        client,
        base,
        shots: shots.clone(),
        taken: 0,
    };
    let outcome = scenario(&mut browser).await;
    if outcome.is_err() {
        if let Ok(png) = browser.client.screenshot().await {
            let _ = std::fs::write(shots.join("failure.png"), png);
        }
        if let Ok(html) = browser.client.source().await {
            let _ = std::fs::write(shots.join("failure.html"), html);
        }
    }
    let _ = browser.client.close().await;
    drop(driver);
    server.abort();
    eprintln!("screenshots in {}", shots.display());
    if let Err(error) = outcome {
        panic!(
            "the browser scenario failed: {error} (see {})",
            shots.join("failure.png").display()
        );
    }
    h.stop().await;
}
