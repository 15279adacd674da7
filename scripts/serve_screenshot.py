"""The screenshot of `posedistill serve`'s page in the README (docs/img/serve_page.png), after `make demo`:

    .venv/bin/python scripts/serve_screenshot.py

Serves the demo teacher with the held-out detections and uploads held-out image 2 in headless Debian
chromium (driven by playwright; no browser download).
"""
import re
import subprocess

from playwright.sync_api import sync_playwright

SERVE = [".venv/bin/posedistill", "serve", "runs/demo/teacher/best.pth",
         "--boxes", "runs/demo/data/val/annotations/detections_val.json", "--port", "0"]


def main() -> None:
    proc = subprocess.Popen(SERVE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = next(m.group(1) for line in proc.stdout if (m := re.search(r"(http://\S+/)", line)))
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 900, "height": 760})
            page.goto(url)
            page.set_input_files("#file", "runs/demo/data/val/images/000000000002.jpg")
            page.wait_for_selector('#status[data-state="done"]', timeout=30000)
            print(page.inner_text("#status"))
            page.screenshot(path="docs/img/serve_page.png")
            browser.close()
    finally:
        proc.terminate()


if __name__ == "__main__":
    main()
