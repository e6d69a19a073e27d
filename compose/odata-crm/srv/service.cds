using crm from '../db/schema';

service CrmService @(path: '/odata/v4/crm') {
  entity accounts as projection on crm.accounts;
  entity leads    as projection on crm.leads;
  entity contacts as projection on crm.contacts;
}
