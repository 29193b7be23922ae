//! Other views of a trace (issue 7, first part): folded stacks and the diff of two runs.

use crate::common::*;
use crate::under_vmshim::*;
use std::process::Command;

fn arena_bytes_in_proc(run: &Run) -> u64 {
    run.smaps
        .iter()
        .filter(|(m, f)| m.path.is_empty() && f.iter().any(|f| f == "nr"))
        .map(|(m, _)| m.len())
        .sum()
}

#[test]
fn folded_stacks_weigh_the_whole_address_space() {
    let dir = TestDir::new("views_folded");
    let run = run_handshake(&dir, &build_c("threads"), &["--malloc", "2"]);
    let out =
        run_with_timeout(Command::new(vmshim_bin()).args(["report", "--folded"]).arg(&run.trace), TIMEOUT);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut total = 0;
    for line in text.lines() {
        let (stack, bytes) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line}"));
        total += bytes.parse::<u64>().unwrap();
        assert!(!stack.contains(' '), "frames carry no spaces: {line}");
    }
    assert_eq!(total, vsz_bytes(&run.maps), "the folded weights add up to /proc's VSZ");
    let arena_lines: u64 = text
        .lines()
        .filter(|l| l.starts_with("malloc_arena;"))
        .map(|l| l.rsplit_once(' ').unwrap().1.parse::<u64>().unwrap())
        .sum();
    assert_eq!(arena_lines, arena_bytes_in_proc(&run));
}

#[test]
fn diff_shows_what_malloc_arena_max_saves() {
    let prog = build_c("threads");
    let args = ["--malloc", "4"];
    let dir_a = TestDir::new("views_diff_a");
    let a = run_handshake(&dir_a, &prog, &args);
    let dir_b = TestDir::new("views_diff_b");
    let b = finish_handshake(&dir_b, {
        let mut cmd = vmshim_run_cmd(&dir_b, &prog, &args);
        cmd.env("MALLOC_ARENA_MAX", "1");
        Handshake::start(&mut cmd, TIMEOUT)
    });
    let out = run_with_timeout(Command::new(vmshim_bin()).arg("diff").arg(&a.trace).arg(&b.trace), TIMEOUT);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}");
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("malloc_arena "))
        .unwrap_or_else(|| panic!("{text}"));
    let change = line.split_whitespace().last().unwrap().replace(',', "");
    let want = arena_bytes_in_proc(&b) as i64 - arena_bytes_in_proc(&a) as i64;
    assert_eq!(change.parse::<i64>().unwrap() * 1024, want, "{line}");
    let heaps: std::collections::BTreeSet<u64> = a
        .smaps
        .iter()
        .filter(|(m, f)| m.path.is_empty() && f.iter().any(|f| f == "nr"))
        .map(|(m, _)| m.start & !((64 << 20) - 1))
        .collect();
    assert!(text.contains(&format!("malloc arenas {} -> 0", heaps.len())), "{text}");
}

#[test]
fn the_arena_advice_is_what_malloc_arena_max_2_really_does() {
    let prog = build_c("threads");
    let args = ["--malloc", "4"];
    let dir_a = TestDir::new("views_advice_a");
    let a = run_handshake(&dir_a, &prog, &args);
    let arena =
        a.report.advice.iter().find(|x| x.text.starts_with("MALLOC_ARENA_MAX=2")).expect("arena advice");
    let dir_b = TestDir::new("views_advice_b");
    let b = finish_handshake(&dir_b, {
        let mut cmd = vmshim_run_cmd(&dir_b, &prog, &args);
        cmd.env("MALLOC_ARENA_MAX", "2");
        Handshake::start(&mut cmd, TIMEOUT)
    });
    assert_eq!(
        arena.saves_bytes,
        arena_bytes_in_proc(&a) - arena_bytes_in_proc(&b),
        "the predicted saving is what /proc shows under MALLOC_ARENA_MAX=2: {arena:?}"
    );
}

#[test]
fn go_tool_pprof_reads_the_profile_and_its_totals_match() {
    let dir = TestDir::new("views_pprof");
    let run = run_handshake_settled(&dir, &build_go("ex6", true, &[]), &[], &[]);
    let profile = dir.join("ex6.pb.gz");
    let out = run_with_timeout(
        Command::new(vmshim_bin()).arg("report").arg(&run.trace).arg("--pprof").arg(&profile),
        TIMEOUT,
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let raw = run_with_timeout(Command::new("go").args(["tool", "pprof", "-raw"]).arg(&profile), TIMEOUT);
    let text = String::from_utf8_lossy(&raw.stdout).into_owned();
    assert!(
        raw.status.success() && text.contains("reserved/bytes regions/count"),
        "{text}{}",
        String::from_utf8_lossy(&raw.stderr)
    );
    // Sample lines: "<reserved> <regions>: <location ids>".
    let (mut bytes, mut regions) = (0u64, 0u64);
    for l in text.lines() {
        let Some((values, _)) = l.split_once(':') else { continue };
        let v: Vec<u64> = values.split_whitespace().filter_map(|x| x.parse().ok()).collect();
        if let [b, n] = v.as_slice() {
            bytes += b;
            regions += n;
        }
    }
    assert_eq!(bytes, vsz_bytes(&run.maps), "pprof's reserved bytes add up to /proc's VSZ");
    assert_eq!(regions as usize, run.report.regions.len());
    let top = run_with_timeout(
        Command::new("go").args(["tool", "pprof", "-top", "-sample_index=reserved"]).arg(&profile),
        TIMEOUT,
    );
    let top = String::from_utf8_lossy(&top.stdout);
    assert!(top.contains("x_cgo_mmap") && top.contains("threadentry"), "{top}");
}

#[test]
fn the_html_page_renders_in_chromium_and_shows_the_categories_of_ex6() {
    let dir = TestDir::new("views_html");
    let run = run_handshake_settled(&dir, &build_go("ex6", true, &[]), &[], &[]);
    let page = dir.join("ex6.html");
    let out = run_with_timeout(
        Command::new(vmshim_bin()).arg("report").arg(&run.trace).arg("--html").arg(&page),
        TIMEOUT,
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(
        !html.contains("<script") && !html.contains("src=\"http"),
        "self-contained: no script, no external asset"
    );
    let chromium = |extra: &[&str]| {
        let mut c = Command::new("chromium");
        c.args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
            .args([
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--enable-logging=stderr",
                "--v=0",
            ])
            .arg(format!("--user-data-dir={}", dir.join("chromium-profile").display()))
            .args(extra)
            .arg(format!("file://{}", page.display()));
        run_with_timeout(&mut c, TIMEOUT)
    };
    let dom = chromium(&["--dump-dom"]);
    let dom_text = String::from_utf8_lossy(&dom.stdout).into_owned();
    let log = String::from_utf8_lossy(&dom.stderr).into_owned();
    assert!(dom.status.success(), "chromium: {log}");
    assert!(!log.contains("Uncaught") && !log.contains(":CONSOLE("), "console errors: {log}");
    // Every category of the JSON report is on the page with its bytes, in the table and in the
    // map (the rects of a category add up to its bytes).
    for c in &run.report.categories {
        let (name, bytes) = (c.category.as_str(), c.bytes);
        assert!(dom_text.contains(&format!(r#"data-category="{name}" data-bytes="{bytes}""#)), "{name} row");
        let in_map: u64 = dom_text
            .split("<rect ")
            .skip(1)
            .filter(|r| r.contains(&format!(r#"data-category="{name}""#)))
            .filter_map(|r| r.split("data-bytes=\"").nth(1)?.split('"').next()?.parse::<u64>().ok())
            .sum();
        assert_eq!(in_map, bytes, "the map's {name} blocks add up to the report's");
    }
    let shot = dir.join("ex6.png");
    let s = chromium(&["--window-size=1200,2200", &format!("--screenshot={}", shot.display())]);
    assert!(
        s.status.success() && std::fs::metadata(&shot).map(|m| m.len() > 10_000).unwrap_or(false),
        "a screenshot"
    );
}

#[test]
fn ex6_diff_and_advice_with_and_without_malloc_arena_max() {
    let prog = build_go("ex6", true, &[]);
    let dir_a = TestDir::new("views_ex6_a");
    let a = run_handshake_settled(&dir_a, &prog, &[], &[]);
    let dir_b = TestDir::new("views_ex6_b");
    let b = run_handshake_settled(&dir_b, &prog, &[], &[("MALLOC_ARENA_MAX", "2")]);
    let (arena_a, arena_b) = (arena_bytes_in_proc(&a), arena_bytes_in_proc(&b));
    assert!(arena_a > arena_b, "{arena_a} vs {arena_b}");
    // The advice on the first run predicts the second.
    let arena =
        a.report.advice.iter().find(|x| x.text.starts_with("MALLOC_ARENA_MAX=2")).expect("arena advice");
    assert_eq!(arena.saves_bytes, arena_a - arena_b, "{arena:?}");
    // The diff shows the same change, and the call stack it came from.
    let out = run_with_timeout(Command::new(vmshim_bin()).arg("diff").arg(&a.trace).arg(&b.trace), TIMEOUT);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("malloc_arena "))
        .unwrap_or_else(|| panic!("{text}"));
    let change: i64 = line.split_whitespace().last().unwrap().replace(',', "").parse().unwrap();
    assert_eq!(change * 1024, arena_b as i64 - arena_a as i64, "{line}");
    assert!(text.contains("malloc_arena free() clone3;start_thread;threadentry"), "{text}");
}

#[test]
fn text_sizes_are_exact_with_bytes_and_uncoloured_in_a_pipe() {
    let dir = TestDir::new("views_bytes");
    let run = run_handshake(&dir, &build_c("threads"), &["1"]);
    let out =
        run_with_timeout(Command::new(vmshim_bin()).args(["report", "--bytes"]).arg(&run.trace), TIMEOUT);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(!text.contains('\x1b'), "no colour codes in a pipe");
    let vsz = vsz_bytes(&run.maps).to_string();
    let grouped: String = vsz
        .chars()
        .rev()
        .enumerate()
        .fold(String::new(), |mut acc, (i, c)| {
            if i > 0 && i % 3 == 0 {
                acc.push(',');
            }
            acc.push(c);
            acc
        })
        .chars()
        .rev()
        .collect();
    assert!(text.contains(&format!("VSZ {grouped} B")), "{grouped}\n{text}");
    // `| head` closes the pipe early: vmshim ends quietly.
    let piped = run_with_timeout(
        Command::new("sh").arg("-c").arg(format!(
            "{} events {} | head -1",
            vmshim_bin().display(),
            run.trace.display()
        )),
        TIMEOUT,
    );
    assert!(piped.status.success() && String::from_utf8_lossy(&piped.stderr).is_empty(), "{piped:?}");
}

#[test]
fn the_html_page_stays_usable_for_thousands_of_regions() {
    let dir = TestDir::new("views_html_big");
    let run = run_handshake(&dir, &build_c("manymaps"), &["3000"]);
    assert!(run.maps.len() > 3000, "{} regions", run.maps.len());
    let page = dir.join("big.html");
    let started = std::time::Instant::now();
    let out = run_with_timeout(
        Command::new(vmshim_bin()).arg("report").arg(&run.trace).arg("--html").arg(&page),
        TIMEOUT,
    );
    assert!(out.status.success());
    let html_len = std::fs::metadata(&page).unwrap().len();
    assert!(html_len < 16 << 20, "{html_len} bytes");
    let dom = run_with_timeout(
        Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--dump-dom",
            ])
            .arg(format!("--user-data-dir={}", dir.join("chromium-profile").display()))
            .arg(format!("file://{}", page.display())),
        TIMEOUT,
    );
    let dom = String::from_utf8_lossy(&dom.stdout);
    let rects = dom.matches("<rect ").count();
    assert!(rects >= run.maps.len() - 1, "{rects} blocks for {} regions", run.maps.len());
    assert!(started.elapsed().as_secs() < 60, "report and render in under a minute: {:?}", started.elapsed());
}
