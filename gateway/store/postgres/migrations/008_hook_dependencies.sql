-- Hosted hooks (issue 16), as SQLite's migration 012: a script hook's npm dependencies, a JSON
-- object {name: version} (gateway/runtime/package_specs.py); '{}' for every other hook. A
-- constant default: no table rewrite.
ALTER TABLE hooks ADD COLUMN dependencies text NOT NULL DEFAULT '{}';
