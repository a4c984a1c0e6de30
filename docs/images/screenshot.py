"""A screenshot of a web page after it has drawn, for the docs: python docs/images/screenshot.py URL OUT.png

Headless Chromium's --screenshot with --virtual-time-budget caught TensorBoard's charts before their lines were
drawn (they render lazily); driving Chromium through chromedriver and waiting real seconds does not. TensorBoard's
settings pane, open by default, is closed first. Needs Debian's chromium and chromium-driver, and selenium (dev).
"""

import sys
import time

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service

url, out = sys.argv[1], sys.argv[2]
options = Options()
for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,900"):
    options.add_argument(arg)
options.binary_location = "/usr/bin/chromium"
driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
try:
    driver.get(url)
    time.sleep(12)
    for button in driver.find_elements("xpath", "//button[contains(., 'Settings')]"):
        button.click()
    time.sleep(4)
    driver.save_screenshot(out)
finally:
    driver.quit()
