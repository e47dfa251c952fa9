// The aiestack console's only script: the playground's streaming chat. No framework, no CDN.
// Each pane streams from the server's own POST /v1/chat/completions (stream: true), sent with the
// session cookie and the page's CSRF token, and appends each delta as it arrives.
"use strict";

(function () {
  const csrf = () => (document.querySelector('meta[name="csrf-token"]') || {}).content || "";

  function number(form, name) {
    const el = form.elements[name];
    if (!el || el.value === "") return undefined;
    const v = Number(el.value);
    return Number.isFinite(v) ? v : undefined;
  }

  function turn(output, role, text) {
    const div = document.createElement("div");
    div.className = "turn " + role;
    div.dataset.role = role;
    div.textContent = text;
    output.appendChild(div);
    output.scrollTop = output.scrollHeight;
    return div;
  }

  // Parse server-sent events from a ReadableStream, calling onData(json) for each data line.
  async function readEvents(response, onData, signal) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      if (signal.aborted) { await reader.cancel(); return; }
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const event = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        for (const line of event.split("\n")) {
          if (!line.startsWith("data:")) continue;
          const data = line.slice(5).trim();
          if (data === "[DONE]") return;
          onData(JSON.parse(data));
        }
      }
    }
  }

  async function runPane(pane, form, message, controller) {
    const output = pane.querySelector(".output");
    const meta = pane.querySelector(".meta");
    const history = pane.history || (pane.history = []);
    const system = pane.querySelector('textarea[name="system"]').value.trim();
    history.push({ role: "user", content: message });
    turn(output, "user", message);
    const answer = turn(output, "assistant", "");
    const messages = (system ? [{ role: "system", content: system }] : []).concat(history);
    const body = {
      model: pane.querySelector('select[name="model"]').value,
      messages: messages,
      stream: true,
      stream_options: { include_usage: true },
      temperature: number(form, "temperature"),
      max_tokens: number(form, "max_tokens"),
      top_p: number(form, "top_p"),
    };
    const started = performance.now();
    let firstAt = null;
    let usage = null;
    try {
      const response = await fetch("/v1/chat/completions", {
        method: "POST",
        credentials: "same-origin",
        headers: { "content-type": "application/json", "x-csrf-token": csrf() },
        body: JSON.stringify(body),
        signal: controller.signal,
      });
      const exchange = response.headers.get("x-aiestack-exchange-id");
      if (!response.ok) {
        const err = await response.json().catch(() => ({}));
        throw new Error((err.error && err.error.message) || "HTTP " + response.status);
      }
      await readEvents(response, (chunk) => {
        if (chunk.error) throw new Error(chunk.error.message || "the stream failed");
        if (chunk.usage) usage = chunk.usage;
        for (const choice of chunk.choices || []) {
          const text = (choice.delta && choice.delta.content) || "";
          if (text) {
            if (firstAt === null) firstAt = performance.now();
            answer.textContent += text;
            output.scrollTop = output.scrollHeight;
          }
        }
      }, controller.signal);
      history.push({ role: "assistant", content: answer.textContent });
      const total = performance.now() - started;
      meta.textContent = "";
      const parts = [
        "TTFT " + (firstAt === null ? "–" : Math.round(firstAt - started) + " ms"),
        "total " + Math.round(total) + " ms",
      ];
      if (usage) parts.push(usage.prompt_tokens + " in / " + usage.completion_tokens + " out");
      meta.append(parts.join(" · ") + " · ");
      if (exchange) {
        const link = document.createElement("a");
        link.href = "/exchanges/" + encodeURIComponent(exchange);
        link.textContent = "exchange";
        meta.append(link);
      }
    } catch (error) {
      history.pop();
      if (error.name === "AbortError") {
        turn(output, "error", "(stopped)");
      } else {
        answer.classList.add("error");
        turn(output, "error", String(error.message || error));
      }
    }
  }

  function setupPlayground(form) {
    const panes = document.getElementById("panes");
    const compare = document.getElementById("compare");
    const send = document.getElementById("send");
    const stop = document.getElementById("stop");
    let controller = null;
    compare.addEventListener("change", () => panes.classList.toggle("both", compare.checked));
    // A registered prompt's template becomes the pane's system prompt (to edit or fill in).
    for (const select of panes.querySelectorAll('select[name="prompt"]')) {
      select.addEventListener("change", () => {
        const option = select.selectedOptions[0];
        const system = select.closest(".pane").querySelector('textarea[name="system"]');
        if (option && option.dataset.template !== undefined) system.value = option.dataset.template;
      });
    }
    stop.addEventListener("click", () => controller && controller.abort());
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const message = form.elements.message.value.trim();
      if (!message) return;
      controller = new AbortController();
      send.disabled = true;
      stop.disabled = false;
      const active = [...panes.querySelectorAll(".pane")].filter((p) => compare.checked || p.dataset.pane === "1");
      await Promise.all(active.map((pane) => runPane(pane, form, message, controller)));
      form.elements.message.value = "";
      send.disabled = false;
      stop.disabled = true;
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    const form = document.getElementById("playground");
    if (form) setupPlayground(form);
  });
})();
