//! `load`: drives a running instance over HTTP with simulated registrants following the whole
//! flow (order, wait for the price, registrant, wait for the reservation, pay, wait for the
//! confirmation), at a given rate or as fast as the concurrency allows, and reports what it
//! measured: orders per second completed, percentiles of the time to the priced order, to the
//! confirmed order and of each HTTP call, the orders completed in each second of the run,
//! and every error.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::documents::Documents;
use conference_domain::read_model::ConferenceQueries;

/// What to run.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// The instance, e.g. `http://127.0.0.1:8080`.
    pub url: String,
    /// How many orders to run through the whole flow.
    pub orders: usize,
    /// How many registrants at a time.
    pub concurrency: usize,
    /// Orders started per second; `None`: as fast as the concurrency allows.
    pub rate: Option<f64>,
    /// The admin token, to create a conference large enough for the run.
    pub admin_token: String,
}

/// Percentiles of a set of durations, in milliseconds.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Percentiles {
    /// How many samples.
    pub count: usize,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Slowest.
    pub max: f64,
}

impl Percentiles {
    /// The percentiles of `samples` (milliseconds).
    pub fn of(samples: &[f64]) -> Self {
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        let at = |q: f64| {
            if sorted.is_empty() {
                return 0.0;
            }
            let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
            sorted[rank - 1]
        };
        Self {
            count: sorted.len(),
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            max: sorted.last().copied().unwrap_or(0.0),
        }
    }
}

/// The orders completed over a run's time.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Throughput {
    /// Orders completed in each second of the run, from its start.
    pub per_second: Vec<u32>,
    /// Orders per second completed over the middle [`Throughput::STEADY`] of the run's wall
    /// time: the rate it held, without the first registrants' start nor the last orders'
    /// drain (an offered rate of 1,000 orders/s reports a little less overall, since its last
    /// orders finish after the last start).
    pub steady: f64,
    /// The fewest orders completed in a whole second within that middle part.
    pub slowest_second: u32,
}

impl Throughput {
    /// The share of the run, centred, that [`steady`](Self::steady) covers.
    pub const STEADY: f64 = 0.8;

    /// The throughput of orders completed at `done_at` (seconds from the start) in a run of
    /// `elapsed` seconds.
    pub fn of(done_at: &[f64], elapsed: f64) -> Self {
        let mut per_second = vec![0u32; elapsed.max(0.0).ceil() as usize];
        for &at in done_at {
            if let Some(second) = per_second.get_mut(at.max(0.0) as usize) {
                *second += 1;
            } else if let Some(last) = per_second.last_mut() {
                *last += 1;
            }
        }
        let (from, to) = (
            elapsed * (1.0 - Self::STEADY) / 2.0,
            elapsed * (1.0 + Self::STEADY) / 2.0,
        );
        let within = done_at.iter().filter(|&&at| (from..to).contains(&at)).count();
        let steady = if to > from {
            within as f64 / (to - from)
        } else {
            0.0
        };
        let slowest_second = (from.ceil() as usize..to.floor() as usize)
            .filter_map(|second| per_second.get(second).copied())
            .min()
            .unwrap_or(0);
        Self {
            per_second,
            steady,
            slowest_second,
        }
    }
}

/// What a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    /// The instance driven.
    pub url: String,
    /// Orders asked for.
    pub orders: usize,
    /// Orders that went through the whole flow.
    pub completed: usize,
    /// Registrants at a time.
    pub concurrency: usize,
    /// The rate asked for (orders started per second), if any.
    pub rate: Option<f64>,
    /// Wall time of the run, in seconds.
    pub elapsed_seconds: f64,
    /// Completed orders per second, over the whole run.
    pub orders_per_second: f64,
    /// Completed orders over time, and the rate held between start and drain.
    pub throughput: Throughput,
    /// From placing the order to seeing its price.
    pub time_to_priced_ms: Percentiles,
    /// From placing the order to seeing it confirmed.
    pub time_to_confirmed_ms: Percentiles,
    /// Each HTTP call, by route.
    pub calls_ms: BTreeMap<String, Percentiles>,
    /// Every error, in words.
    pub errors: Vec<String>,
    /// The raw time-to-priced samples (for the plot).
    #[serde(skip)]
    pub priced_samples: Vec<f64>,
    /// The raw time-to-confirmed samples (for the plot).
    #[serde(skip)]
    pub confirmed_samples: Vec<f64>,
}

/// One registrant's measurements.
#[derive(Debug, Default)]
struct Flow {
    /// When the order was confirmed, in seconds from the start of the run.
    done_at: f64,
    priced_ms: f64,
    confirmed_ms: f64,
    calls: Vec<(&'static str, f64)>,
}

/// An HTTP client that times each call by route.
struct Client {
    http: reqwest::Client,
    url: String,
    admin_token: String,
}

impl Client {
    async fn call(
        &self,
        flow: &mut Flow,
        route: &'static str,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        let mut request = self.http.request(method, format!("{}{path}", self.url));
        if path.starts_with("/api/admin") {
            request = request.bearer_auth(&self.admin_token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let started = Instant::now();
        let response = request.send().await.map_err(|e| format!("{route}: {e}"))?;
        let status = response.status();
        let text = response.text().await.map_err(|e| format!("{route}: {e}"))?;
        flow.calls.push((route, started.elapsed().as_secs_f64() * 1e3));
        if !status.is_success() {
            return Err(format!("{route}: {status} {text}"));
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Long-polls the order until `done` holds; returns it.
    async fn order_until(
        &self,
        flow: &mut Flow,
        route: &'static str,
        order_id: &str,
        mut version: i64,
        done: impl Fn(&Value) -> bool,
    ) -> Result<Value, String> {
        for _ in 0..20 {
            let path = format!("/api/orders/{order_id}?wait_for_version={version}");
            let order = self.call(flow, route, reqwest::Method::GET, &path, None).await?;
            if done(&order) {
                return Ok(order);
            }
            version = order["version"].as_i64().unwrap_or(version);
        }
        Err(format!("{route}: order {order_id} never got there"))
    }
}

async fn registrant(client: &Client, conference: &str, seat_type: &str, n: usize) -> Result<Flow, String> {
    let mut flow = Flow::default();
    let started = Instant::now();
    let order = json!({ "seats": [{ "seat_type_id": seat_type, "quantity": 1 }] });
    let placed = client
        .call(
            &mut flow,
            "POST orders",
            reqwest::Method::POST,
            &format!("/api/conferences/{conference}/orders"),
            Some(order),
        )
        .await?;
    let order_id = placed["order_id"]
        .as_str()
        .ok_or("POST orders: no order id")?
        .to_owned();
    let version = placed["order_version"].as_i64().unwrap_or(-1);
    let priced = client
        .order_until(&mut flow, "GET order (price)", &order_id, version, |o| {
            o["total"].is_string()
        })
        .await?;
    flow.priced_ms = started.elapsed().as_secs_f64() * 1e3;
    let registrant = json!({ "first_name": "Load", "last_name": format!("Tester {n}"), "email": format!("load{n}@example.org") });
    let assigned = client
        .call(
            &mut flow,
            "PUT registrant",
            reqwest::Method::PUT,
            &format!("/api/orders/{order_id}/registrant"),
            Some(registrant),
        )
        .await?;
    let version = assigned["order_version"]
        .as_i64()
        .or_else(|| priced["version"].as_i64())
        .unwrap_or(-1);
    let reserved = client
        .order_until(&mut flow, "GET order (reserved)", &order_id, version, |o| {
            o["state"] == "reservation_completed" && o["registrant"].is_object()
        })
        .await?;
    let payment = client
        .call(
            &mut flow,
            "POST payment",
            reqwest::Method::POST,
            &format!("/api/orders/{order_id}/payment"),
            None,
        )
        .await?;
    let payment_id = payment["payment_id"]
        .as_str()
        .ok_or("POST payment: no payment id")?;
    client
        .call(
            &mut flow,
            "POST accept",
            reqwest::Method::POST,
            &format!("/api/payments/{payment_id}/accept"),
            None,
        )
        .await?;
    // The confirmation comes after the order as last seen: wait past that version.
    let version = reserved["version"].as_i64().unwrap_or(-1);
    client
        .order_until(&mut flow, "GET order (confirmed)", &order_id, version, |o| {
            o["state"] == "confirmed"
        })
        .await?;
    flow.confirmed_ms = started.elapsed().as_secs_f64() * 1e3;
    Ok(flow)
}

/// Creates and publishes a conference with three paid seat types of 100,000 seats; returns its
/// code and seat-type ids once its seats are on sale.
///
/// Whether they are is read from the read models in the database (`documents`), not from the
/// public API: the site caches a conference's seat types (`DOMAIN.md` §13.1), for 5 minutes
/// when every type has none left, so asking it before the seats arrive would show them sold
/// out for that long.
async fn conference(client: &Client, documents: &Documents) -> Result<(String, Vec<String>), String> {
    let mut flow = Flow::default();
    let code = format!("load_{}", uuid::Uuid::now_v7().simple());
    let form = json!({
        "code": code, "name": "Load test", "description": "Created by conference-app load",
        "location": "localhost", "tagline": null, "start_date": "2030-01-01T09:00:00Z",
        "end_date": "2030-01-02T18:00:00Z", "owner_name": "Load", "owner_email": "load@example.org",
    });
    let admin = "/api/admin/conferences";
    client
        .call(&mut flow, "admin", reqwest::Method::POST, admin, Some(form))
        .await?;
    for name in ["Pass A", "Pass B", "Pass C"] {
        let seat = json!({ "name": name, "description": name, "price": "10.00", "quantity": 100_000 });
        let path = format!("{admin}/{code}/seat-types");
        client
            .call(&mut flow, "admin", reqwest::Method::POST, &path, Some(seat))
            .await?;
    }
    let path = format!("{admin}/{code}/publish");
    client
        .call(&mut flow, "admin", reqwest::Method::POST, &path, None)
        .await?;
    let mut polls = 0;
    while !on_sale(documents, &code).await? {
        polls += 1;
        if polls == 600 {
            return Err("the load-test conference never went on sale".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let path = format!("/api/conferences/{code}");
    let details = client
        .call(&mut flow, "admin", reqwest::Method::GET, &path, None)
        .await?;
    let types = details["seat_types"].as_array().cloned().unwrap_or_default();
    if types.len() != 3 || types.iter().any(|t| t["available"] != 100_000) {
        return Err(format!(
            "the site shows the load-test conference's seats as {types:?}"
        ));
    }
    let ids = types
        .iter()
        .filter_map(|t| t["id"].as_str().map(str::to_owned))
        .collect();
    Ok((code, ids))
}

/// Whether the conference `code` is published with its three seat types' 100,000 seats on
/// sale, as its read models say.
async fn on_sale(documents: &Documents, code: &str) -> Result<bool, String> {
    let Some(view) = documents
        .conference_details(code)
        .await
        .map_err(|e| e.to_string())?
    else {
        return Ok(false);
    };
    let types = documents
        .published_seat_types(view.id)
        .await
        .map_err(|e| e.to_string())?;
    Ok(types.len() == 3 && types.iter().all(|t| t.available_quantity == 100_000))
}

/// Runs the load against the instance at `config.url`, whose read models are `documents` (read
/// to know when the run's conference is on sale), and reports.
///
/// # Errors
/// When the conference for the run cannot be set up.
pub async fn run(config: &LoadConfig, documents: &Documents) -> Result<LoadReport, String> {
    let client = Arc::new(Client {
        http: reqwest::Client::builder()
            .pool_max_idle_per_host(config.concurrency)
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| e.to_string())?,
        url: config.url.trim_end_matches('/').to_owned(),
        admin_token: config.admin_token.clone(),
    });
    let (code, seat_types) = conference(&client, documents).await?;
    let next = Arc::new(AtomicUsize::new(0));
    let flows = Arc::new(Mutex::new(Vec::new()));
    let errors = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..config.concurrency.max(1) {
        let (client, next, flows, errors) = (client.clone(), next.clone(), flows.clone(), errors.clone());
        let (code, seat_types, total, rate) = (code.clone(), seat_types.clone(), config.orders, config.rate);
        workers.spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= total {
                    return;
                }
                if let Some(rate) = rate {
                    // Order n starts at n / rate seconds.
                    let due = started + Duration::from_secs_f64(n as f64 / rate);
                    tokio::time::sleep_until(due.into()).await;
                }
                match registrant(&client, &code, &seat_types[n % seat_types.len()], n).await {
                    Ok(mut flow) => {
                        flow.done_at = started.elapsed().as_secs_f64();
                        flows.lock().await.push(flow);
                    }
                    Err(error) => errors.lock().await.push(error),
                }
            }
        });
    }
    while workers.join_next().await.is_some() {}
    let elapsed = started.elapsed().as_secs_f64();
    let flows = std::mem::take(&mut *flows.lock().await);
    let errors = std::mem::take(&mut *errors.lock().await);
    let mut calls: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for flow in &flows {
        for (route, ms) in &flow.calls {
            calls.entry((*route).to_owned()).or_default().push(*ms);
        }
    }
    let priced: Vec<f64> = flows.iter().map(|f| f.priced_ms).collect();
    let confirmed: Vec<f64> = flows.iter().map(|f| f.confirmed_ms).collect();
    let done_at: Vec<f64> = flows.iter().map(|f| f.done_at).collect();
    Ok(LoadReport {
        url: config.url.clone(),
        orders: config.orders,
        completed: flows.len(),
        concurrency: config.concurrency,
        rate: config.rate,
        elapsed_seconds: elapsed,
        orders_per_second: flows.len() as f64 / elapsed.max(1e-9),
        throughput: Throughput::of(&done_at, elapsed),
        time_to_priced_ms: Percentiles::of(&priced),
        time_to_confirmed_ms: Percentiles::of(&confirmed),
        calls_ms: calls
            .iter()
            .map(|(route, ms)| (route.clone(), Percentiles::of(ms)))
            .collect(),
        errors,
        priced_samples: priced,
        confirmed_samples: confirmed,
    })
}

/// Where a chart of the plot is drawn.
type Area<'a> = plotters::drawing::DrawingArea<plotters::prelude::SVGBackend<'a>, plotters::coord::Shift>;

/// Draws a run as an SVG: the latency histograms (time to priced, time to confirmed) above, the
/// orders completed in each second below.
///
/// # Errors
/// When the file cannot be written.
pub fn plot(report: &LoadReport, path: &std::path::Path) -> Result<(), String> {
    use plotters::prelude::*;

    let root = SVGBackend::new(path, (900, 800)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let (latencies, throughput) = root.split_vertically(500);
    plot_latencies(report, &latencies)?;
    plot_throughput(report, &throughput)?;
    root.present().map_err(|e| e.to_string())
}

/// The histograms of the time to priced and to confirmed.
fn plot_latencies(report: &LoadReport, root: &Area<'_>) -> Result<(), String> {
    use plotters::prelude::*;

    let max = report
        .priced_samples
        .iter()
        .chain(&report.confirmed_samples)
        .copied()
        .fold(1.0_f64, f64::max);
    let buckets = 40usize;
    let width = max / buckets as f64;
    let histogram = |samples: &[f64]| {
        let mut counts = vec![0u32; buckets];
        for s in samples {
            counts[((s / width) as usize).min(buckets - 1)] += 1;
        }
        counts
    };
    let (priced, confirmed) = (
        histogram(&report.priced_samples),
        histogram(&report.confirmed_samples),
    );
    let top = priced.iter().chain(&confirmed).copied().max().unwrap_or(1).max(1);
    let caption = format!(
        "{} orders at {:.0} orders/s: time to priced (p99 {:.0} ms) and to confirmed (p99 {:.0} ms)",
        report.completed,
        report.orders_per_second,
        report.time_to_priced_ms.p99,
        report.time_to_confirmed_ms.p99
    );
    let mut chart = ChartBuilder::on(root)
        .caption(caption, ("sans-serif", 18))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..max, 0u32..top + top / 10 + 1)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("milliseconds")
        .y_desc("orders")
        .draw()
        .map_err(|e| e.to_string())?;
    for (counts, color, label) in [
        (&priced, BLUE, "time to priced"),
        (&confirmed, RED, "time to confirmed"),
    ] {
        chart
            .draw_series(counts.iter().enumerate().map(|(i, &n)| {
                let x0 = i as f64 * width;
                Rectangle::new([(x0, 0), (x0 + width, n)], color.mix(0.45).filled())
            }))
            .map_err(|e| e.to_string())?
            .label(label)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.mix(0.45).filled()));
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE)
        .draw()
        .map_err(|e| e.to_string())
}

/// The orders completed in each second, with the steady rate (and the rate asked for, if any).
fn plot_throughput(report: &LoadReport, root: &Area<'_>) -> Result<(), String> {
    use plotters::prelude::*;

    let per_second = &report.throughput.per_second;
    let seconds = per_second.len().max(1) as f64;
    let top = per_second
        .iter()
        .map(|&n| f64::from(n))
        .chain(report.rate)
        .fold(1.0_f64, f64::max);
    let caption = format!(
        "orders completed per second: {:.0} steady over the middle {:.0} % of the run",
        report.throughput.steady,
        Throughput::STEADY * 100.0
    );
    let mut chart = ChartBuilder::on(root)
        .caption(caption, ("sans-serif", 18))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..seconds, 0.0..top * 1.1)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("seconds from the start")
        .y_desc("orders/s")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()
        .map_err(|e| e.to_string())?;
    chart
        .draw_series(per_second.iter().enumerate().map(|(i, &n)| {
            Rectangle::new(
                [(i as f64, 0.0), (i as f64 + 1.0, f64::from(n))],
                BLUE.mix(0.45).filled(),
            )
        }))
        .map_err(|e| e.to_string())?
        .label("completed in that second")
        .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], BLUE.mix(0.45).filled()));
    let levels = [
        (
            Some(report.throughput.steady),
            BLACK.stroke_width(2),
            "steady rate",
        ),
        (report.rate, RED.stroke_width(1), "rate asked for"),
    ];
    for (level, style, label) in levels {
        let Some(level) = level else { continue };
        chart
            .draw_series([PathElement::new([(0.0, level), (seconds, level)], style)])
            .map_err(|e| e.to_string())?
            .label(label)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 10, y)], style));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .border_style(BLACK)
        .background_style(WHITE)
        .draw()
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let samples: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(
            Percentiles::of(&samples),
            Percentiles {
                count: 100,
                p50: 50.0,
                p90: 90.0,
                p99: 99.0,
                max: 100.0
            }
        );
        assert_eq!(Percentiles::of(&[]), Percentiles::default());
        assert_eq!(Percentiles::of(&[7.0]).p99, 7.0);
    }

    #[test]
    fn throughput_counts_each_second_and_leaves_out_the_start_and_the_drain() {
        // 10 s: 100 orders a second for the first 9 s, then 20 stragglers in the last one.
        let mut done_at: Vec<f64> = (0..900).map(|i| f64::from(i) / 100.0).collect();
        done_at.extend((0..20).map(|i| 9.0 + f64::from(i) / 20.0));
        let throughput = Throughput::of(&done_at, 10.0);
        let mut expected = vec![100; 9];
        expected.push(20);
        assert_eq!(throughput.per_second, expected);
        // Seconds 1 to 9: the 800 orders of seconds 1 to 8, none of the drain.
        assert!((throughput.steady - 100.0).abs() < 1e-9, "{}", throughput.steady);
        assert_eq!(throughput.slowest_second, 100);
        done_at.retain(|&at| !(4.0..5.0).contains(&at));
        assert_eq!(Throughput::of(&done_at, 10.0).slowest_second, 0);
        // An order seen confirmed just as the clock stopped counts in the last second.
        assert_eq!(Throughput::of(&[0.5, 2.0], 2.0).per_second, [1, 1]);
        assert_eq!(Throughput::of(&[], 0.0), Throughput::default());
    }
}
