-- wrk script: each connection waits 100 ms after an answer before its next scrape, as a scraper on a
-- schedule does (Prometheus waits its scrape_interval), instead of scraping as fast as the server answers.
function delay()
   return 100
end
