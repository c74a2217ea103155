// What grafana/clickhouse-datasource v4.20.0 does with a dashboard's ad hoc filters, re-implemented
// line for line from its source (read at the tag v4.20.0; each function cites file and lines) and
// run on the plugin's own parser, pgsql-ast-parser at the version its package-lock.json locks
// (12.0.2, tests/js/package-lock.json). Used by tests/test_grafana_adhoc.py.
//
// usage: node plugin_adhoc.cjs <folder holding node_modules>  < {adhoc_query, panels: [sql], filters}
// answer (stdout, JSON): {keys_table, keys_sql, target_table, error, panels: [{sql, from: [{ref, table}]}]}
'use strict';
const path = require('path');
const { parseFirst, astMapper, toSql } = require(path.join(process.argv[2], 'node_modules', 'pgsql-ast-parser'));

// src/data/ast.ts lines 10-13
function getReplacementKey(isVariable) {
  const prefix = isVariable ? 'v' : 'f';
  return prefix + (Math.random() + 1).toString(36).substring(7);
}

// src/data/ast.ts lines 18-41 (replaceMacroFunctions)
function replaceMacroFunctions(sql) {
  const replaceFuncs = [];
  const keywordRegex = /(\$__|\$|default|settings)/gi;
  let m;
  while ((m = keywordRegex.exec(sql)) !== null) {
    replaceFuncs.push({ startIndex: m.index, name: m[0], replacementName: '' });
  }
  for (let i = replaceFuncs.length - 1; i >= 0; i--) {
    const si = replaceFuncs[i].startIndex;
    const replacementName = getReplacementKey(false);
    replaceFuncs[i].replacementName = replacementName;
    if (replaceFuncs[i].name.toLowerCase() === 'settings') {
      sql = sql.substring(0, si);
      continue;
    }
    sql = sql.substring(0, si) + replacementName + sql.substring(si + replaceFuncs[i].name.length);
  }
  return [replaceFuncs, sql];
}

// src/data/ast.ts lines 47-65 (replaceMacroVariables)
function replaceMacroVariables(sql) {
  const replaceVariables = [];
  const variableRegex = /\${[a-zA-Z0-9_:.\w]+}/g;
  let m;
  while ((m = variableRegex.exec(sql)) !== null) {
    replaceVariables.push({ startIndex: m.index, name: m[0], replacementName: '' });
  }
  for (let i = replaceVariables.length - 1; i >= 0; i--) {
    const si = replaceVariables[i].startIndex;
    const replacementName = getReplacementKey(true);
    replaceVariables[i].replacementName = replacementName;
    sql = sql.substring(0, si) + replacementName + sql.substring(si + replaceVariables[i].name.length);
  }
  return [replaceVariables, sql];
}

// src/data/ast.ts lines 69-124 (sqlToStatement): the parse error, which the plugin logs and
// turns into an empty statement, is kept here so a test can say why.
let lastParseError = '';
function sqlToStatement(rawSql) {
  const [replaceVars, variableSql] = replaceMacroVariables(rawSql);
  const [replaceFuncs, sql] = replaceMacroFunctions(variableSql);
  const replaceParts = replaceVars.concat(replaceFuncs);
  let ast;
  try {
    ast = parseFirst(sql);
  } catch (err) {
    lastParseError = String(err).split('\n')[0];
    return {};
  }
  const mapper = astMapper((map) => ({
    tableRef: (t) => {
      const rfs = replaceParts.find((x) => x.replacementName === t.schema);
      if (rfs) {
        return { ...t, schema: t.schema.replace(rfs.replacementName, rfs.name) };
      }
      const rft = replaceParts.find((x) => x.replacementName === t.name);
      if (rft) {
        return { ...t, name: t.name.replace(rft.replacementName, rft.name) };
      }
      return map.super().tableRef(t);
    },
    ref: (r) => {
      const rf = replaceParts.find((x) => r.name.startsWith(x.replacementName));
      if (rf) {
        return { ...r, name: r.name.replace(rf.replacementName, rf.name) };
      }
      return map.super().ref(r);
    },
    expr: (e) => {
      if (!e || e.type !== 'string') {
        return map.super().expr(e);
      }
      const rf = replaceParts.find((x) => e.value.startsWith(x.replacementName));
      if (rf) {
        return { ...e, value: e.value.replace(rf.replacementName, rf.name) };
      }
      return map.super().expr(e);
    },
    call: (c) => {
      const rf = replaceParts.find((x) => c.function.name.startsWith(x.replacementName));
      if (rf) {
        return { ...c, function: { ...c.function, name: c.function.name.replace(rf.replacementName, rf.name) } };
      }
      return map.super().call(c);
    },
  }));
  return mapper.statement(ast);
}

// src/data/ast.ts lines 126-146 (getTable)
function getTable(sql) {
  const stm = sqlToStatement(sql);
  if (stm.type !== 'select' || !stm.from || stm.from.length <= 0) {
    return '';
  }
  switch (stm.from[0].type) {
    case 'table': {
      const table = stm.from[0];
      const tableName = `${table.name.schema ? `${table.name.schema}.` : ''}${table.name.name}`;
      const s = new RegExp(`\\b${tableName}\\b`, 'gi').exec(sql);
      return s ? s[0] : tableName;
    }
    case 'statement': {
      return getTable(toSql.statement(stm.from[0].statement));
    }
  }
  return '';
}

// src/data/CHDatasource.ts lines 1739-1748 (extractTableNameFromQuery)
function extractTableNameFromQuery(query) {
  const fromMatch = query.match(/FROM\s+(?:"?(\w+)"?\.)?"?(\w+)"?/i);
  if (fromMatch) {
    const database = fromMatch[1];
    const table = fromMatch[2];
    return database ? `${database}.${table}` : table;
  }
  return null;
}

// src/data/adHocFilter.ts lines 101-103, 110-112, 114-155, 157-167, 169-181 (the filter text).
function isValid(f) {
  return f.key !== undefined && f.key !== '' && f.operator !== undefined && f.value !== undefined;
}
function escapeMapKeyForOuterFilter(key) {
  return key.replace(/\\/g, '\\\\\\\\').replace(/'/g, "\\\\\\'");
}
const DEFAULT_MAP_COLUMNS = new Set(['ResourceAttributes', 'ScopeAttributes', 'LogAttributes']); // adHocFilter.ts line 7
function escapeKey(s, mapColumns) {
  if (s.startsWith('arrayElement(') && s.endsWith(')')) {
    const match = s.match(/arrayElement\((.*?),\s*['"](.*?)['"]\)/);
    if (match) {
      return `${match[1]}[\\'${escapeMapKeyForOuterFilter(match[2])}\\']`;
    }
  }
  const parts = s.split('.');
  if (parts.length >= 3 && !mapColumns.has(parts[0]) && mapColumns.has(parts[1])) {
    return `${parts[1]}[\\'${escapeMapKeyForOuterFilter(parts.slice(2).join('.'))}\\']`;
  }
  if (parts.length >= 2 && mapColumns.has(parts[0])) {
    return `${parts[0]}[\\'${escapeMapKeyForOuterFilter(parts.slice(1).join('.'))}\\']`;
  }
  return s.includes('.') ? s.split('.').slice(1).join('.') : s;
}
function escapeValueBasedOnOperator(s, operator) {
  if (operator === 'IN') {
    if (s.length > 2 && s[0] !== '(' && s[s.length - 1] !== ')') {
      s = `(${s})`;
    }
    return s.replace(/'/g, "\\'");
  }
  return `\\'${s}\\'`;
}
function convertOperatorToClickHouseOperator(operator) {
  if (operator === '=~') return 'REGEXP';
  if (operator === '!~') return 'NOT REGEXP';
  return operator;
}
// src/data/adHocFilter.ts lines 41-65 (buildFilterString)
function buildFilterString(filters) {
  const valid = filters.filter(isValid);
  return valid
    .map((f, i) => {
      const key = escapeKey(f.key, DEFAULT_MAP_COLUMNS);
      const value = escapeValueBasedOnOperator(f.value, f.operator);
      const condition = i !== valid.length - 1 ? (f.condition ? f.condition : 'AND') : '';
      return ` ${key} ${convertOperatorToClickHouseOperator(f.operator)} ${value} ${condition}`;
    })
    .join('');
}

class AdHocFilter {
  constructor() {
    this.targetTable = '';
  }
  // src/data/adHocFilter.ts lines 13-18 (setTargetTableFromQuery)
  setTargetTableFromQuery(query) {
    this.targetTable = getTable(query);
    if (this.targetTable === '') {
      throw new Error('Failed to get table from adhoc query.');
    }
  }
  // src/data/adHocFilter.ts lines 72-98 (apply)
  apply(sql, filters) {
    if (sql === '' || !filters || filters.length === 0) {
      return sql;
    }
    if (this.targetTable !== '' && !sql.replace(/"/g, '').match(new RegExp(`.*\\b${this.targetTable}\\b.*`, 'gi'))) {
      return sql;
    }
    if (this.targetTable === '') {
      this.targetTable = getTable(sql);
    }
    if (this.targetTable === '') {
      return sql;
    }
    const f = buildFilterString(filters);
    if (f === '') {
      return sql;
    }
    sql = sql.replace(';', '');
    return `${sql} settings additional_table_filters={'${this.targetTable}' : '${f}'}`;
  }
}

// src/data/CHDatasource.ts lines 1700-1737 (fetchTags, a query-type source): the table the keys
// are read from, the SQL run for them, and the filter's target table.
function main(input) {
  const out = { keys_table: null, keys_sql: null, target_table: '', error: '', panels: [] };
  const source = input.adhoc_query;
  const filter = new AdHocFilter();
  try {
    if (source.includes('$__adhoc_column')) {
      const tableName = extractTableNameFromQuery(source);
      if (tableName) {
        out.keys_table = tableName;
        filter.setTargetTableFromQuery(source.replace(/\$__adhoc_column/g, '*'));
        const parts = tableName.split('.');
        out.keys_sql = parts.length === 2
          ? `SELECT name, type, table FROM system.columns WHERE database = '${parts[0]}' AND table = '${parts[1]}'`
          : `SELECT name, type, table FROM system.columns WHERE table = '${tableName}'`;
      } else {
        out.keys_sql = source;  // the fallback: the source run as it is
      }
    } else {
      filter.setTargetTableFromQuery(source);
      out.keys_sql = source;
    }
  } catch (err) {
    out.error = `${err.message} (${lastParseError})`;
  }
  out.target_table = filter.targetTable;
  for (const sql of input.panels) {
    // Each FROM of the panel as the plugin's parser reads it (getTable of a query on that reference).
    const from = [];
    // A name, quoted or not, with its database: what a FROM names (comments are not FROMs).
    const code = sql.replace(/--[^\n]*/g, '');
    for (const m of code.matchAll(/\bFROM\s+((?:"[^"]+"|`[^`]+`|\w+)(?:\.(?:"[^"]+"|`[^`]+`|\w+))?)/gi)) {
      lastParseError = '';
      from.push({ ref: m[1], table: getTable(`SELECT * FROM ${m[1]}`), error: lastParseError });
    }
    out.panels.push({ sql: filter.apply(sql, input.filters), from });
  }
  return out;
}

let text = '';
process.stdin.setEncoding('utf8');
process.stdin.on('data', (chunk) => (text += chunk));
process.stdin.on('end', () => process.stdout.write(JSON.stringify(main(JSON.parse(text)))));
