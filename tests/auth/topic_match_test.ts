import assert from "node:assert/strict";
import { filterCovers, filterProblem, topicMatches } from "../../src/auth/topic_match.ts";

Deno.test("topicMatches follows the wildcard rules of §4.7.1", () => {
  const cases: [string, string, boolean][] = [
    ["sport/tennis/player1/#", "sport/tennis/player1", true],
    ["sport/tennis/player1/#", "sport/tennis/player1/ranking", true],
    ["sport/tennis/player1/#", "sport/tennis/player1/score/wimbledon", true],
    ["sport/#", "sport", true],
    ["#", "a/b/c", true],
    ["sport/tennis/+", "sport/tennis/player1", true],
    ["sport/tennis/+", "sport/tennis/player1/ranking", false],
    ["sport/+", "sport", false],
    ["sport/+", "sport/", true],
    ["+/+", "/finance", true],
    ["/+", "/finance", true],
    ["+", "/finance", false],
    ["a/b", "a/b", true],
    ["a/b", "a/c", false],
    ["a/b", "a/b/c", false],
    ["a/b/c", "a/b", false],
  ];
  for (const [filter, topic, want] of cases) {
    assert.equal(topicMatches(filter, topic), want, `${filter} vs ${topic}`);
  }
});

Deno.test("a leading wildcard does not match $ topics (MQTT-4.7.2-1)", () => {
  assert.equal(topicMatches("#", "$SYS/broker/uptime"), false);
  assert.equal(topicMatches("+/broker/uptime", "$SYS/broker/uptime"), false);
  assert.equal(topicMatches("$SYS/#", "$SYS/broker/uptime"), true);
  assert.equal(topicMatches("$SYS/+/uptime", "$SYS/broker/uptime"), true);
  // Only the first level is special.
  assert.equal(topicMatches("a/+", "a/$b"), true);
});

Deno.test("filterCovers: the filter must be equal to or narrower than the rule", () => {
  const cases: [string, string, boolean][] = [
    ["a/#", "a/b/+", true],
    ["a/#", "a/#", true],
    ["a/#", "a", true],
    ["a/#", "b/#", false],
    ["a/+", "a/#", false],
    ["a/+", "a/b", true],
    ["a/+", "a/+", true],
    ["a/+", "a/b/c", false],
    ["a/b", "a/+", false],
    ["a/b", "a/b", true],
    ["a/+/c", "a/b/c", true],
    ["a/+/#", "a/#", false],
    ["a/+/#", "a/b/#", true],
    ["#", "#", true],
    ["#", "a/+/#", true],
    ["+/#", "#", true],
    ["+", "#", false],
    ["+/+", "+/#", false],
  ];
  for (const [rule, filter, want] of cases) {
    assert.equal(filterCovers(rule, filter), want, `rule ${rule} covers ${filter}`);
  }
});

Deno.test("filterCovers keeps $ topics apart from leading wildcards", () => {
  assert.equal(filterCovers("#", "$SYS/#"), false);
  assert.equal(filterCovers("+/#", "$SYS/broker"), false);
  assert.equal(filterCovers("$SYS/#", "$SYS/broker/+"), true);
  assert.equal(filterCovers("$SYS/#", "#"), false);
});

Deno.test("filterProblem rejects malformed filters and accepts valid ones", () => {
  assert.equal(filterProblem("a/#"), undefined);
  assert.equal(filterProblem("+/+/#"), undefined);
  assert.equal(filterProblem("a b/c"), undefined);
  assert.match(filterProblem("")!, /empty/);
  assert.match(filterProblem("a/#/b")!, /'#'/);
  assert.match(filterProblem("a#")!, /'#'/);
  assert.match(filterProblem("a/b+")!, /'\+'/);
});
