{{/*
Names. Kubernetes names are at most 63 characters (DNS labels); suffixes are kept in the budget.
*/}}
{{- define "tributary.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "tributary.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* The operator's objects: Deployment, ServiceAccount, (Cluster)Roles. */}}
{{- define "tributary.operatorName" -}}
{{- printf "%s-operator" (include "tributary.fullname" . | trunc 54 | trimSuffix "-") }}
{{- end }}

{{- define "tributary.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "tributary.labels" -}}
helm.sh/chart: {{ include "tributary.chart" . }}
{{ include "tributary.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: tributary
{{- end }}

{{/* Selector labels: immutable on a Deployment, so nothing here may change between releases. */}}
{{- define "tributary.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tributary.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "tributary.operatorSelectorLabels" -}}
{{ include "tributary.selectorLabels" . }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "tributary.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "tributary.operatorName" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* repository:tag, or repository@digest when a digest is set. */}}
{{- define "tributary.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The workers' image: the operator's own unless worker.image overrides it. */}}
{{- define "tributary.workerImage" -}}
{{- if .Values.worker.image.repository }}
{{- printf "%s:%s" .Values.worker.image.repository (default .Chart.AppVersion .Values.worker.image.tag) }}
{{- else }}
{{- include "tributary.image" . }}
{{- end }}
{{- end }}

{{/* Namespaces holding a worker ServiceAccount, as a JSON list (templates iterate over it). */}}
{{- define "tributary.workerNamespaces" -}}
{{- $namespaces := .Values.worker.namespaces | default .Values.watchNamespaces | default (list .Release.Namespace) }}
{{- $namespaces | uniq | toJson }}
{{- end }}

{{/*
What the operator does inside a namespace it watches, as RBAC rules: one list for the ClusterRole
(whole cluster) and for each Role (watchNamespaces). Each rule names the code that needs it.
*/}}
{{- define "tributary.operatorNamespacedRules" -}}
# The custom resources: kopf lists and watches them, patches annotations/finalizers (progress,
# diff-base) and the status subresource.
- apiGroups: ["tributary.dev"]
  resources: ["ingestionjobs", "streampipelines", "embeddingindexes"]
  verbs: ["get", "list", "watch", "patch", "update"]
- apiGroups: ["tributary.dev"]
  resources: ["ingestionjobs/status", "streampipelines/status", "embeddingindexes/status"]
  verbs: ["get", "patch", "update"]
# Children carry an owner reference with blockOwnerDeletion (kopf.adopt); clusters that enable the
# OwnerReferencesPermissionEnforcement admission plugin (OpenShift does) require this to set it.
- apiGroups: ["tributary.dev"]
  resources: ["ingestionjobs/finalizers", "streampipelines/finalizers", "embeddingindexes/finalizers"]
  verbs: ["update"]
# One Indexed Job per IngestionJob run: list (by label), create, patch (suspend), delete.
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["create", "get", "list", "watch", "patch", "delete"]
# Checkpoint ConfigMaps: created per run, read for progress, deleted with the run or by label.
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["create", "get", "list", "patch", "delete", "deletecollection"]
# Redis URLs (spec.checkpoint.redisSecretRef) are read by name; no list, so Secrets cannot be enumerated.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
# Leader election: one Lease per watched namespace (or one in the release namespace when watching
# the whole cluster) keeps a single active operator per scope; a second release stands by.
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  verbs: ["get", "create", "update"]
# The runs' pods, listed by label: their termination messages say why a shard failed.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list"]
# Pre-flight: the worker ServiceAccount a run's pods use must exist before its Job is created.
- apiGroups: [""]
  resources: ["serviceaccounts"]
  verbs: ["get"]
# One worker Deployment per StreamPipeline: created, its template and replicas patched.
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["create", "get", "list", "watch", "patch", "delete"]
# The operator owns a worker Deployment's replicas unless an HPA targets it (then it stands back).
- apiGroups: ["autoscaling"]
  resources: ["horizontalpodautoscalers"]
  verbs: ["list"]
# kopf.info/kopf.warn and handler outcomes are posted as Events (core v1 today; events.k8s.io is
# the API newer clients use).
- apiGroups: ["", "events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}

{{/* Cluster-scoped reads kopf needs in every mode. */}}
{{- define "tributary.operatorClusterRules" -}}
# kopf watches CRDs to notice when its resources are (re)installed or change versions.
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["get", "list", "watch"]
{{- if .Values.watchNamespaces }}
# With --namespace, kopf lists and watches namespaces to match its namespace patterns.
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["list", "watch"]
{{- end }}
{{- end }}

{{/* The workers' ClusterRole, bound per namespace only. */}}
{{- define "tributary.workerRoleName" -}}
{{- printf "%s-worker" (include "tributary.fullname" . | trunc 56 | trimSuffix "-") }}
{{- end }}
