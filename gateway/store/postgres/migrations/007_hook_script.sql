-- Hosted hooks (issue 16), as SQLite's migration 011: a hook's Node.js script, run by the
-- gateway's runtime (gateway/runtime/) instead of a call to its url, which is then ''. NULL: a
-- hook with a url. A nullable column without a default: no table rewrite.
ALTER TABLE hooks ADD COLUMN script text;
