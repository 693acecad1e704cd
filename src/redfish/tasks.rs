//! The TaskService: long operations (a virtual media insert, which fetches an ISO and uploads
//! it to Glance) run as Redfish tasks (DSP0266 §13 "Asynchronous operations"; schemas
//! TaskService v1_3_0, Task v1_7_0). The request that starts one is answered `202 Accepted`
//! with `Location` = the task monitor; the monitor answers `202` while the task runs and `200`
//! (the Task) once it has ended; the Task resource itself lives in `TaskService/Tasks`.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use hyper::Method;
use serde_json::{Value, json};

/// The most recent tasks kept (older ended ones are dropped first).
const KEEP: usize = 64;

/// Where the tasks are.
pub const TASKS: &str = "/redfish/v1/TaskService/Tasks";
/// Where their monitors are (DSP0266 §13.2: a URI that is not a resource).
pub const MONITORS: &str = "/redfish/v1/TaskService/TaskMonitors";

/// `TaskState` (Task v1_7_0; only the ones ovbmc's tasks go through).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Under way.
    Running,
    /// Ended well.
    Completed,
    /// Ended with an error (the messages say which).
    Exception,
}

/// One task.
#[derive(Clone, Debug)]
pub struct Task {
    /// `Id`.
    pub id: String,
    /// `Name` (what it does, to which system).
    pub name: String,
    /// The system it works on (who may see it: the users of that BMC).
    pub system: String,
    /// `TaskState`.
    pub state: State,
    start: SystemTime,
    end: Option<SystemTime>,
    messages: Vec<Value>,
}

#[derive(Default)]
struct List {
    next: u64,
    tasks: VecDeque<Task>,
}

/// The service's tasks.
#[derive(Default)]
pub struct Tasks(Mutex<List>);

/// A message of the TaskEvent registry (../shared/redfish/registries/TaskEvent.1.0.5.json).
fn task_event(id: &str, message: &str, task: &str, severity: &str) -> Value {
    json!({
        "MessageId": format!("TaskEvent.1.0.{id}"),
        "Message": message.replace("%1", task),
        "MessageArgs": [task],
        "MessageSeverity": severity,
    })
}

impl Tasks {
    fn lock(&self) -> std::sync::MutexGuard<'_, List> {
        // Poisoning only means a panic elsewhere; every update is a plain assignment.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Start a task on `system`; its id.
    pub fn start(&self, name: String, system: &str) -> String {
        let mut l = self.lock();
        l.next += 1;
        let id = l.next.to_string();
        if l.tasks.len() >= KEEP {
            // The oldest ended task goes; if all run, the oldest one is only forgotten here
            // (its work goes on).
            let i = l
                .tasks
                .iter()
                .position(|t| t.state != State::Running)
                .unwrap_or(0);
            l.tasks.remove(i);
        }
        l.tasks.push_back(Task {
            messages: vec![task_event(
                "TaskStarted",
                "The task with Id '%1' has started.",
                &id,
                "OK",
            )],
            id: id.clone(),
            name,
            system: system.to_string(),
            state: State::Running,
            start: SystemTime::now(),
            end: None,
        });
        id
    }

    /// End task `id`: `Ok` completed, `Err(message)` an exception, the message (what went
    /// wrong, for the operator) added to its `Messages` as Base `GeneralError`.
    pub fn finish(&self, id: &str, outcome: Result<(), String>) {
        let mut l = self.lock();
        let Some(t) = l.tasks.iter_mut().find(|t| t.id == id) else {
            return;
        };
        t.end = Some(SystemTime::now());
        match outcome {
            Ok(()) => {
                t.state = State::Completed;
                t.messages.push(task_event(
                    "TaskCompletedOK",
                    "The task with Id '%1' has completed.",
                    id,
                    "OK",
                ));
            }
            Err(why) => {
                t.state = State::Exception;
                t.messages.push(task_event(
                    "TaskAborted",
                    "The task with Id '%1' has completed with errors.",
                    id,
                    "Critical",
                ));
                t.messages.push(json!({
                    "MessageId": format!("{}.GeneralError", super::BASE),
                    "Message": why,
                    "MessageArgs": [],
                    "MessageSeverity": "Critical",
                    "Resolution": "See the message; correct the request or the cloud and \
                                   insert the media again.",
                }));
            }
        }
    }

    /// Task `id`.
    pub fn get(&self, id: &str) -> Option<Task> {
        self.lock().tasks.iter().find(|t| t.id == id).cloned()
    }

    /// Every task, oldest first.
    pub fn list(&self) -> Vec<Task> {
        self.lock().tasks.iter().cloned().collect()
    }
}

/// The methods a TaskService path takes (`None`: not one of its paths).
pub fn allowed(path: &str) -> Option<&'static [Method]> {
    const GET: &[Method] = &[Method::GET, Method::HEAD];
    let rest = path.strip_prefix("/redfish/v1/")?;
    let seg: Vec<&str> = rest.split('/').collect();
    match seg.as_slice() {
        ["TaskService"]
        | ["TaskService", "Tasks"]
        | ["TaskService", "Tasks", _]
        | ["TaskService", "TaskMonitors", _] => Some(GET),
        _ => None,
    }
}

/// The TaskService.
pub fn service() -> Value {
    json!({
        "@odata.id": "/redfish/v1/TaskService",
        "@odata.type": "#TaskService.v1_3_0.TaskService",
        "Id": "TaskService",
        "Name": "Task Service",
        "ServiceEnabled": true,
        // Ended tasks are dropped oldest first beyond a fixed number, not at a time.
        "CompletedTaskOverWritePolicy": "Oldest",
        "LifeCycleEventOnTaskStateChange": false,
        "Status": { "State": "Enabled", "Health": "OK" },
        "Tasks": { "@odata.id": TASKS },
    })
}

/// A task's monitor URI.
pub fn monitor(id: &str) -> String {
    format!("{MONITORS}/{id}")
}

/// The Task resource.
pub fn task(t: &Task) -> Value {
    let (state, status) = match t.state {
        State::Running => ("Running", "OK"),
        State::Completed => ("Completed", "OK"),
        State::Exception => ("Exception", "Critical"),
    };
    let mut v = json!({
        "@odata.id": format!("{TASKS}/{}", t.id),
        "@odata.type": "#Task.v1_7_0.Task",
        "Id": t.id,
        "Name": t.name,
        "TaskState": state,
        "TaskStatus": status,
        "StartTime": rfc3339(t.start),
        "TaskMonitor": monitor(&t.id),
        "Messages": t.messages,
    });
    if let Some(end) = t.end {
        v["EndTime"] = json!(rfc3339(end));
        v["PercentComplete"] = json!(100);
    }
    v
}

/// `Edm.DateTimeOffset` text of `t` in UTC (RFC 3339, e.g. `2026-12-02T19:30:00Z`).
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Days since 1970-01-01 to a civil date (H. Hinnant, "chrono-Compatible Low-Level Date
    // Algorithms", days_from_civil's inverse).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn dates() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        // 2026-12-02T19:30:05Z (date -u -d @1796239805).
        let t = UNIX_EPOCH + Duration::from_secs(1_796_239_805);
        assert_eq!(rfc3339(t), "2026-12-02T19:30:05Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn a_task_runs_then_ends() {
        let ts = Tasks::default();
        let id = ts.start("insert".into(), "sys");
        assert_eq!(task(&ts.get(&id).unwrap())["TaskState"], "Running");
        ts.finish(&id, Err("HTTP 404 from http://h/x.iso".into()));
        let v = task(&ts.get(&id).unwrap());
        assert_eq!(v["TaskState"], "Exception");
        assert!(
            v["Messages"][2]["Message"]
                .as_str()
                .unwrap()
                .contains("404")
        );
        assert!(v.get("EndTime").is_some());
        for _ in 0..KEEP + 3 {
            let i = ts.start("x".into(), "sys");
            ts.finish(&i, Ok(()));
        }
        assert_eq!(ts.list().len(), KEEP);
    }
}
