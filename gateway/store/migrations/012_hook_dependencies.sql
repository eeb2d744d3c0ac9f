-- Hosted hooks (issue 16): a script hook's npm dependencies, a JSON object {name: version}
-- (gateway/runtime/package_specs.py); '{}' for every other hook.
ALTER TABLE hooks ADD COLUMN dependencies TEXT NOT NULL DEFAULT '{}';
