-- Hosted hooks (issue 16): a hook's Node.js script, run by the gateway's runtime
-- (gateway/runtime/) instead of a call to its url, which is then ''. NULL: a hook with a url.
ALTER TABLE hooks ADD COLUMN script TEXT;
