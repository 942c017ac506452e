// The run time a request would take on this server, shown before it is submitted
// (POST /estimate: the server's cost model and its ceiling, T2A_MAX_COST).

import { api } from "./api.js";
import { formatDuration } from "./format.js";

/** The estimate's line: "About 40 min on this server." or why it would be refused. */
export function estimateText(answer) {
  const about = `about ${formatDuration(answer.estimate_seconds)}`;
  if (answer.allowed) return `This will take ${about} on this server.`;
  const lower = answer.lower.slice(0, 3).join(", ");
  return `Too large for this server: ${about}, at most ${formatDuration(answer.max_cost)}. ` +
    `Lower ${lower}.`;
}

/** Keep `element` showing the estimate of `formData()` while the form changes. */
export function watchEstimate(form, formData, element) {
  let timer = 0;
  let asked = 0;
  const update = async () => {
    const mine = ++asked;
    const data = formData();
    data.delete("init_image");
    data.delete("image_prompts"); // files cost nothing to estimate: not sent
    try {
      const answer = await api.estimate(data);
      if (mine !== asked) return; // a newer question is under way
      element.textContent = estimateText(answer);
      element.dataset.allowed = String(answer.allowed);
      element.hidden = false;
    } catch {
      if (mine === asked) element.hidden = true; // a bad field says so beside it on submit
    }
  };
  const later = () => {
    clearTimeout(timer);
    timer = setTimeout(update, 300);
  };
  form.addEventListener("input", later);
  form.addEventListener("change", later);
  update();
}
